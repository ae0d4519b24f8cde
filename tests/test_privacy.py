"""Outputs and downloads private to the user, or to a configured group (hftri_mimic/common/privacy.py,
docs/SECURITY.md).

Every workflow run in these tests starts with umask 002 (conftest.snakemake), so a file the workflow leaves readable
by others would show here."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest
from conftest import SMALL_DEMO, snakemake, write_config

from hftri_mimic.common.privacy import close_folders, folder_mode, output_umask, readable_by_others

SOURCE_TARGET = "results/source/hosp/patients.csv.gz"  # the demo source: one job, a few seconds, a full tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umasks_close_what_the_setting_says():
    assert output_umask("none") == 0o077 and output_umask("read") == 0o027 and output_umask("write") == 0o007
    with pytest.raises(ValueError, match=r"privacy\.group_access"):
        output_umask("everyone")
    assert folder_mode("none", None) == 0o700
    assert folder_mode("read", "staff") == 0o750 | stat.S_ISGID


def test_close_folders_tightens_existing_folders_and_skips_absent_ones(tmp_path):
    loose = tmp_path / "results"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    (loose / "cohort.parquet").write_bytes(b"x")
    os.chmod(loose / "cohort.parquet", 0o644)
    assert readable_by_others(loose) == [loose, loose / "cohort.parquet"]
    assert close_folders([loose, tmp_path / "absent"], "none") == [loose]
    assert mode(loose) == 0o700 and not (tmp_path / "absent").exists()
    assert close_folders([loose], "none") == []  # already closed: nothing to do


def test_a_run_closes_an_out_dir_an_earlier_run_left_open(tmp_path):
    write_config(tmp_path, demo=SMALL_DEMO)
    results = tmp_path / "results"
    results.mkdir()
    os.chmod(results, 0o755)
    stale = results / "old_cohort.parquet"
    stale.write_bytes(b"x")
    os.chmod(stale, 0o644)
    snakemake(tmp_path, "--cores", "1", SOURCE_TARGET, timeout=300)
    assert mode(results) == 0o700  # the stale file keeps its mode, but nobody else can reach it
    assert readable_by_others(results) == [stale]
    new = [p for p in results.rglob("*") if p != stale]
    assert len(new) > 20 and all(p.lstat().st_mode & 0o077 == 0 for p in new if not p.is_symlink())


def test_group_access_shares_new_outputs_with_the_configured_group(tmp_path):
    group = grp.getgrgid(os.getgid()).gr_name  # a group this user is in (the only kind a user may hand files to)
    write_config(tmp_path, demo=SMALL_DEMO, privacy={"group_access": "read", "group": group})
    snakemake(tmp_path, "--cores", "1", SOURCE_TARGET, timeout=300)
    results = tmp_path / "results"
    assert mode(results) == 0o750 | stat.S_ISGID and results.stat().st_gid == os.getgid()
    files = [p for p in results.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_gid == os.getgid() for p in files)
    assert {mode(p) for p in files} == {0o640}, "group may read, others nothing"
    assert not readable_by_others(results)


def test_an_unknown_group_fails_before_any_job(tmp_path):
    write_config(tmp_path, privacy={"group_access": "read", "group": "no-such-group-hftri"})
    proc = snakemake(tmp_path, "--cores", "1", SOURCE_TARGET, check=False, timeout=120)
    assert proc.returncode != 0 and "privacy.group: no group named 'no-such-group-hftri'" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_every_output_of_a_trained_run_is_private_to_the_user(trained_run):
    """`all` on the demo (cohort, stores, models, predictions, figures, explanations, logs): group and others get
    nothing, though the run started with umask 002."""
    results = trained_run / "results"
    paths = [p for p in (results, *results.rglob("*")) if not p.is_symlink()]
    assert len(paths) > 300
    open_paths = [p.relative_to(trained_run) for p in paths if p.lstat().st_mode & 0o077]
    assert not open_paths, f"{len(open_paths)} outputs are open to group or others, e.g. {open_paths[:5]}"
