"""The README's result numbers come from a run's tables and name the lock (models.evaluation.readme_results), and
every run
records its environment against the lock (hftri_mimic.common.environment)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import REPO

from hftri_mimic.common.environment import environment_record, locked_versions
from models.evaluation.metrics import results_frame
from models.evaluation.readme_results import main, replace_block

LOCK = REPO / "envs/requirements.lock"


def write_run(results, *, matches_lock: bool = True) -> None:
    eval_dir = results / "eval"
    eval_dir.mkdir(parents=True)
    diagnosis = [
        results_frame(
            "diagnosis",
            subset,
            [
                {"metric": "auc", "value": auc, "ci_low": auc - 0.1, "ci_high": auc + 0.05, "n": 84, "n_skipped": 0},
                {"metric": "accuracy", "value": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n": 84, "n_skipped": 0},
            ],
        )
        for subset, auc in (("lab+ecg+echo", 0.8123), ("lab", 0.7777))
    ]
    pl.concat(diagnosis).write_parquet(eval_dir / "diagnosis.parquet")
    prognosis = results_frame("prognosis", "lab", [{"metric": "c_index", "value": 0.61, "sd": 0.04, "n": 10}])
    prognosis.write_parquet(eval_dir / "prognosis.parquet")
    record = environment_record(LOCK)
    record["matches_lock"] = matches_lock
    record["differences"] = {} if matches_lock else {"numpy": {"installed": "9.9", "locked": "2.4.6"}}
    (eval_dir / "environment.json").write_text(json.dumps(record))


def test_the_environment_record_names_the_lock_and_what_differs(tmp_path):
    record = environment_record(LOCK)
    assert record["lock"] == "requirements.lock" and len(record["lock_sha256"]) == 64
    assert record["matches_lock"] and record["differences"] == {}, "the tests run in the locked environment"
    assert record["packages"]["torch"] == locked_versions(LOCK)["torch"]
    edited = tmp_path / "requirements.lock"
    edited.write_text(LOCK.read_text().replace("\nnumpy==", "\nnumpy==0.0.1+not-installed\n# was "))
    other = environment_record(edited)
    assert not other["matches_lock"] and other["differences"]["numpy"]["locked"] == "0.0.1+not-installed"
    assert environment_record(tmp_path / "missing.lock")["matches_lock"] is False


def test_the_readme_block_is_rewritten_from_the_tables_with_the_lock(tmp_path, capsys):
    write_run(tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold typed numbers 0.99\n<!-- results:end -->\noutro\n")
    main([str(tmp_path / "results"), "--write", str(readme)])
    text = readme.read_text()
    assert "0.99" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "| lab | 0.778 (0.68–0.83) | 0.700 (0.60–0.80) | 0.610 ± 0.040 |" in text
    assert "| lab+ecg+echo | 0.812 (0.71–0.86)" in text
    assert text.index("| lab |") < text.index("| lab+ecg+echo |"), "single modalities first"
    assert environment_record(LOCK)["lock_sha256"][:12] in text and "84 test patients" in text
    main([str(tmp_path / "results"), "--write", str(readme)])
    assert readme.read_text() == text, "rewriting is idempotent"


def test_a_run_outside_the_lock_is_refused(tmp_path):
    write_run(tmp_path / "results", matches_lock=False)
    with pytest.raises(SystemExit, match="differ from the lock"):
        main([str(tmp_path / "results")])


def test_a_readme_without_its_markers_is_refused():
    with pytest.raises(SystemExit, match="exactly one"):
        replace_block("no markers here", "results", "block")


def test_the_readme_numbers_come_from_a_run_with_the_current_lock():
    """A lock refresh can move the numbers: after `envs/lock.sh`, rerun and rewrite the README's blocks."""
    text = (REPO / "README.md").read_text()
    digest = environment_record(LOCK)["lock_sha256"][:12]
    for name in ("results", "ptbxl"):
        block = text.split(f"<!-- {name}:begin -->")[1].split(f"<!-- {name}:end -->")[0]
        assert f"SHA-256 `{digest}…`" in block, f"README's {name} block is not from a run with the current lock"
