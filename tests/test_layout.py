"""The layout shows the design (docs/ARCHITECTURE.md, Layout): packages mirror the stages, tools stay apart."""

from __future__ import annotations

import subprocess

from conftest import REPO

from hftri_mimic.common.rule_code import imported_modules

# The design card's top level, and what a Python project and CI add to it.
TOP_LEVEL = {"Snakefile", "workflow", "envs", "config.yaml", "hftri_mimic", "models", "tests", "README.md"}
PROJECT_FILES = {"docs", "pyproject.toml", ".ci", ".gitignore", ".test"}
STAGE_PACKAGES = {"common", "ingest", "cohort", "ecg", "echo", "dataset", "ptbxl", "demo", "sql", "tools"}


def tracked_files() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()


def test_the_top_level_is_the_design_cards():
    top = {name.split("/")[0] for name in tracked_files()}
    assert top - PROJECT_FILES == TOP_LEVEL


def test_the_curation_library_is_one_package_per_stage():
    library = REPO / "hftri_mimic"
    assert [p.name for p in library.glob("*.py")] == ["__init__.py"], "a module outside the stage packages"
    assert {p.name for p in library.iterdir() if p.is_dir() and p.name != "__pycache__"} == STAGE_PACKAGES
    for package in STAGE_PACKAGES - {"sql"}:
        assert (library / package / "__init__.py").read_text().startswith('"""'), f"{package} says what it holds"


def test_no_runtime_code_imports_the_tools():
    """Benchmarks, the GPU check and the planted-signal check run on demand; no job or library module needs them."""
    runtime = [
        *(p for p in (REPO / "hftri_mimic").rglob("*.py") if "tools" not in p.relative_to(REPO).parts),
        *(REPO / "models").rglob("*.py"),
        *(REPO / "workflow/scripts").glob("*.py"),
    ]
    importing = {
        p.relative_to(REPO).as_posix()
        for p in runtime
        if any(m == "hftri_mimic.tools" or m.startswith("hftri_mimic.tools.") for m in imported_modules(p, REPO))
    }
    assert not importing, f"runtime code imports hftri_mimic.tools: {sorted(importing)}"
