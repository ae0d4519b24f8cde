"""Preflight (hftri_mimic/tools/preflight.py): every problem of a real-layout tree named in one run (issue #22)."""

from __future__ import annotations

import re
import shutil

import torch
import yaml
from test_faults import Table, day_first

from hftri_mimic.tools.preflight import main, preflight
from models.encoders.ecg import STMEMConfig, STMEMEncoder


def real_tree(demo_run, dest):
    """The demo's source tree as a real download: hosp and ECG copied (to be damaged), echo linked."""
    source = demo_run / "results/source"
    shutil.copytree(source / "hosp", dest / "hosp")
    shutil.copytree(source / "ecg", dest / "ecg")
    (dest / "echo").symlink_to(source / "echo")
    return dest


def overlay(tmp_path, **model_paths) -> list:
    config = {
        "out_dir": str(tmp_path / "results"),
        "source": {"kind": "mimic", **{f"{k}_root": str(tmp_path / "physionet" / k) for k in ("hosp", "ecg", "echo")}},
        "model": {part: {key: str(path)} for part, (key, path) in model_paths.items()},
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(config))
    return [path]


def test_preflight_names_three_different_problems_in_one_run(demo_run, tmp_path, capsys):
    tree = real_tree(demo_run, tmp_path / "physionet")
    # 1. admissions exported with day-first dates
    day_first(Table(tree / "hosp/admissions.csv.gz"))
    # 2. an incomplete ECG download: every record of one patient folder in three gone
    folders = sorted((tree / "ecg/files").glob("p*/p*"))
    for folder in folders[::3]:
        shutil.rmtree(folder)
    # 3. an ST-MEM checkpoint whose keys do not match the configured encoder
    state = STMEMEncoder(STMEMConfig(width=64, depth=2, heads=4, proj_dim=64)).vit.state_dict()
    state["pos_embed"] = state.pop("pos_embedding")
    torch.save({"model": state}, tmp_path / "st_mem.pth")

    configfiles = overlay(tmp_path, ecg=("checkpoint", tmp_path / "st_mem.pth"))
    rows = preflight(configfiles)
    problems = {(r.area, r.item): r.detail for r in rows if r.status == "problem"}
    assert re.search(r"column admittime: (\d+) of \1 rows \(100\.0%", problems["source", "admissions.csv.gz"])
    assert "'99/99/9999 99:99'" in problems["source", "admissions.csv.gz"]
    assert "missing files like files/p9999/p99999999/s99999999/99999999." in problems["records", "record_list.csv"]
    assert "pos_embed" in problems["checkpoint", "model.ecg.checkpoint"]
    assert "pos_embedding" in problems["checkpoint", "model.ecg.checkpoint"]
    # a real run without the other pretrained weights would train random encoders: named too
    unset = {"model.text.folder", "model.echo.checkpoint", "echo.view_classifier.weights"}
    assert {item for area, item in problems if area == "checkpoint"} == unset | {"model.ecg.checkpoint"}
    assert set(problems) == {("source", "admissions.csv.gz"), ("records", "record_list.csv")} | {
        ("checkpoint", item) for item in unset | {"model.ecg.checkpoint"}
    }
    # what the run touches, and the checks that passed, are in the same table
    ok = {(r.area, r.item) for r in rows if r.status == "ok"}
    assert {("source", "labevents.csv.gz"), ("records", "echo-record-list.csv"), ("run", "ECG"), ("run", "echo")} <= ok
    assert any(area == "disk" for area, _ in ok)

    assert main(["--configfile", *map(str, configfiles)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("| area | item | status | detail |")
    assert "preflight: 6 problem(s)" in printed
    damaged = Table(tree / "hosp/admissions.csv.gz")
    assert damaged.get(2, "admittime") not in printed, "a patient value was printed"
    missing_folder = folders[0].name  # p<subject_id>
    assert missing_folder not in printed, "a patient id was printed"


def test_preflight_passes_a_sound_demo_tree(demo_run, tmp_path):
    tree = tmp_path / "physionet"
    tree.mkdir()
    for kind in ("hosp", "ecg", "echo"):
        (tree / kind).symlink_to(demo_run / "results/source" / kind)
    rows = preflight(overlay(tmp_path))
    problems = [r for r in rows if r.status == "problem"]
    assert {r.item for r in problems} == {
        "model.text.folder", "model.ecg.checkpoint", "model.echo.checkpoint", "echo.view_classifier.weights"
    }  # fmt: skip
    assert len([r for r in rows if r.area == "source" and r.status == "ok"]) == 11
