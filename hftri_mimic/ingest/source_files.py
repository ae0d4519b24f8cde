"""The files the ECG and echo stages read, from their plans (docs/RUNNING.md, Downloading from PhysioNet).

Phase 2 of the download (``download_cohort``) fetches exactly these files, and a real run checks that every one is
there before any shard reads them (docs/FAULTS.md, Incomplete downloads): an absent file is an incomplete download,
which stops the run (``source.missing_files: error``) or, when the user opts in (``exclude``), excludes its ECG or
echo study under the reason ``not_downloaded``. Paths are relative to the tree's root, as in the record lists and in
PhysioNet's ``SHA256SUMS.txt``.

- ECG plan (``ecg_path``, a WFDB record path without extension): ``<path>.hea`` and ``<path>.dat`` (MIMIC-IV-ECG and
  PTB-XL store one format-16 data file per record, named after it);
- echo plan (``dicom_filepath``): every DICOM of each chosen study.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

NOT_DOWNLOADED = "not_downloaded"
MISSING_FILES = ("error", "exclude")
TREES = ("ecg", "echo")


def masked(rel: str) -> str:
    """A path as messages and logs show it: runs of 4 or more digits as 9s. A cohort file's path holds the subject and
    study ids (files/p1000/p10000032/s40689238/... -> files/p9999/p99999999/s99999999/...), and logs hold no patient
    data; names such as SHA256SUMS.txt or records500/ are unchanged."""
    return re.sub(r"\d{4,}", lambda digits: "9" * len(digits.group()), rel)


class MissingSourceFilesError(RuntimeError):
    """Files the run reads are absent from the source tree (an incomplete download)."""


def fetch_hint(root_key: str) -> str:
    """Which download brings a tree's files: PTB-XL is fetched whole by phase 1, MIMIC-IV's cohort files by phase 2."""
    return "`snakemake download` (project ptb-xl)" if root_key.startswith("ptbxl") else "`snakemake download_cohort`"


def planned_files(plan: Path | str, tree: str) -> list[str]:
    """The relative paths the ``tree`` stage reads for its plan, sorted, each once."""
    if tree == "ecg":
        records = pl.read_parquet(plan, columns=["ecg_path"])["ecg_path"].drop_nulls()
        paths = [f"{record}{suffix}" for record in records for suffix in (".hea", ".dat")]
    elif tree == "echo":
        paths = pl.read_parquet(plan, columns=["dicom_filepath"])["dicom_filepath"].drop_nulls().to_list()
    else:
        raise ValueError(f"tree must be one of {TREES}, not {tree!r}")
    return sorted(set(paths))


def write_file_list(plan: Path | str, tree: str, out: Path | str) -> int:
    """Phase 2's file list: one relative path per line (``download.file_list`` format)."""
    paths = planned_files(plan, tree)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(
        f"# the files the {tree} stage reads for this cohort ({len(paths)})\n" + "".join(f"{p}\n" for p in paths)
    )
    os.replace(tmp, out)
    log.info("%s: %d files the %s stage reads", out.name, len(paths), tree)
    return len(paths)


def absent_files(root: Path | str, paths: list[str], workers: int = 16) -> list[str]:
    """The paths that are not a file under ``root`` (stat calls in threads: a network file system answers each one
    slowly, many at once quickly)."""
    root = Path(root)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        present = list(pool.map(lambda rel: (root / rel).is_file(), paths, chunksize=256))
    return [rel for rel, ok in zip(paths, present, strict=True) if not ok]


def check_files_present(
    plan: Path | str,
    tree: str,
    root: Path | str,
    root_key: str,
    policy: str,
    summary_out: Path | str,
    missing_out: Path | str,
) -> dict:
    """Check that every file the ``tree`` stage reads is under ``root`` (config key ``root_key``).

    Absent files are listed in ``missing_out`` (patient paths: under out_dir, private). With ``policy`` ``error`` any
    absence raises :class:`MissingSourceFilesError` naming the count, the list and masked examples; with ``exclude``
    the shards exclude their records as ``not_downloaded``. ``summary_out`` (JSON, counts only) is written when the
    check passes.
    """
    if policy not in MISSING_FILES:
        raise ValueError(f"source.missing_files must be one of {MISSING_FILES}, not {policy!r}")
    paths = planned_files(plan, tree)
    absent = absent_files(root, paths)
    missing_out = Path(missing_out)
    if absent:
        missing_out.write_text("".join(f"{rel}\n" for rel in absent))
    else:
        missing_out.unlink(missing_ok=True)
    summary = {"tree": tree, "planned_files": len(paths), "absent": len(absent), "missing_files": policy}
    if absent and policy == "error":
        shapes = ", ".join(sorted({masked(rel) for rel in absent[:50]})[:3])
        raise MissingSourceFilesError(
            f"{len(absent)} of the {len(paths)} files the {tree} stage reads are not under {root_key} ({root}): an "
            f"incomplete download? They are listed in {missing_out} (paths like {shapes}). Fetch them with "
            f"{fetch_hint(root_key)}, or set source.missing_files: exclude to exclude their records as "
            f"{NOT_DOWNLOADED} (shown in the attrition)."
        )
    if absent:
        log.warning(
            "%d of %d %s files are absent: their records are excluded as %s (missing_files: exclude); listed in %s",
            len(absent), len(paths), tree, NOT_DOWNLOADED, missing_out,
        )  # fmt: skip
    else:
        log.info("all %d files the %s stage reads are under %s", len(paths), tree, root_key)
    Path(summary_out).write_text(json.dumps(summary, indent=1) + "\n")
    return summary
