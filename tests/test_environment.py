"""The locked environment (envs/requirements.lock, made by envs/lock.sh with pip-tools): it pins every dependency
that pyproject.toml declares, with hashes; the conda environments pin what they name to it; and the environment the
tests run in was installed from it (README command 1, .ci/run), so results do not depend on the day of the install."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hftri_mimic.common.environment import locked_versions

LOCK = REPO / "envs/requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")


def locked() -> dict[str, str]:
    """{canonical name: version} of every pinned line of the lock."""
    return locked_versions(LOCK)


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_the_lock_pins_every_declared_dependency_within_its_range():
    pins = locked()
    assert len(pins) > 100
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is declared in pyproject.toml but not locked: run envs/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"lock has {name}=={pins[name]}"


def test_every_locked_package_has_a_hash_and_nothing_is_unpinned():
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text().split("\n", 6)[-1])
    requirement_lines = [e for e in entries if PIN.match(e)]
    assert len(requirement_lines) == len(locked())
    for entry in requirement_lines:
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"
    other = [
        line
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "--hash")) and not PIN.match(line)
    ]
    assert other == [], f"lines that are neither a pin nor a hash: {other[:3]}"


def test_conda_environments_pin_what_they_name_to_the_lock():
    pins = locked()
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        dependencies = yaml.safe_load(env_file.read_text())["dependencies"]
        conda = [d for d in dependencies if isinstance(d, str)]
        pip = next(d["pip"] for d in dependencies if isinstance(d, dict))
        assert conda == ["python =3.11", "pip"], f"{env_file.name}: conda packages escape the lock: {conda}"
        named = [Requirement(entry) for entry in pip if not entry.startswith("-e ")]
        assert named, env_file.name
        for requirement in named:
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{env_file.name}: {requirement} is not in the lock"
            assert str(requirement.specifier) == f"=={pins[name]}", f"{env_file.name}: {requirement}: run envs/lock.sh"


def test_this_environment_was_installed_from_the_lock():
    """Every locked package is installed at its locked version (README command 1 and .ci/run install from the
    lock; a plain `pip install -e .` resolves whatever is newest that day and gives other numbers)."""
    wrong = {}
    for name, version in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert wrong == {}, f"(installed, locked) differ: {wrong}; reinstall from envs/requirements.lock"
