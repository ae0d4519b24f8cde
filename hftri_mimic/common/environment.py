"""Which software a run's numbers came from: the lock (``envs/requirements.lock``) against what is installed.

The evaluation writes this record beside its tables (``eval/environment.json``), so a result can always be traced
to the lock it was made with, and a run made outside the lock says so instead of passing for a reproducible one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from hftri_mimic.common.numerics import cpu_numerics_mode
from hftri_mimic.common.storage import write_text_atomic

_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)")

# The packages whose versions move the numbers most; listed by name in the record for a reader.
KEY_PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "scikit-survival",
    "transformers",
    "tokenizers",
    "polars",
    "duckdb",
    "neurokit2",
    "snakemake",
)


def locked_versions(lock: Path) -> dict[str, str]:
    """{canonical package name: version} of every ``name==version`` line of a pip-compile lock file."""
    return {canonicalize_name(m[1]): m[2] for line in lock.read_text().splitlines() if (m := _PIN.match(line))}


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_cpu_capability() -> str | None:
    """The instruction set torch's CPU kernels run with in this process (``AVX2``, ``AVX512``, ...), if installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch.backends.cpu.get_cpu_capability()


def environment_record(lock: Path) -> dict[str, Any]:
    """The lock's SHA-256, whether every locked package is installed at its locked version (and which are not),
    the Python version, the key packages' versions and the CPU kernels' instruction set
    (hftri_mimic/common/numerics.py)."""
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {name: installed_version(name) for name in KEY_PACKAGES},
        "cpu_numerics": cpu_numerics_mode(),
        "cpu_capability": torch_cpu_capability(),
    }
    if not lock.is_file():
        return {**record, "lock": None, "lock_sha256": None, "matches_lock": False, "differences": {}}
    differences = {
        name: {"installed": installed_version(name), "locked": version}
        for name, version in locked_versions(lock).items()
        if installed_version(name) != version
    }
    return {
        **record,
        "lock": lock.name,
        "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
        "matches_lock": not differences,
        "differences": differences,
    }


def write_environment_record(lock: Path, path: Path | str) -> dict[str, Any]:
    """Write :func:`environment_record` as JSON (atomically) beside a run's evaluation tables and return it."""
    record = environment_record(lock)
    write_text_atomic(json.dumps(record, indent=2, sort_keys=True) + "\n", path)
    return record
