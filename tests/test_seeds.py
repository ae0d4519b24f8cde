"""The training-seed spread (models/evaluation/seeds.py, workflow/rules/seeds.smk): per-seed metrics recomputed with
scikit-learn / scikit-survival, and the `seeds` target on a copy of the shared small trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import planned_rules, snakemake
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from models.evaluation.seeds import seed_frame, seed_metric, seeds_markdown

TRIMODAL = "lab+ecg+echo"


def _diagnosis(rng: np.random.Generator, n: int = 60) -> pl.DataFrame:
    label = rng.integers(0, 2, n)
    score = np.clip(0.3 * label + rng.uniform(0, 0.7, n), 0, 1)
    split = np.where(np.arange(n) < n // 2, "test", "train")
    return pl.DataFrame(
        {"subject_id": np.arange(n), "split": split, "label": label, "score": score, "pred": score > 0.5}
    )


def _prognosis(rng: np.random.Generator, n: int = 40) -> pl.DataFrame:
    frames = []
    for repeat in range(2):
        for fold in range(2):
            risk = rng.normal(size=n)
            time = rng.exponential(500 * np.exp(-0.5 * risk))
            frames.append(
                pl.DataFrame(
                    {
                        "subject_id": np.arange(n),
                        "repeat": repeat,
                        "fold": fold,
                        "time": time,
                        "event": rng.random(n) < 0.5,
                        "risk": risk,
                    }
                )
            )
    return pl.concat(frames)


def test_seed_metrics_are_the_libraries_values():
    rng = np.random.default_rng(0)
    diagnosis, prognosis = _diagnosis(rng), _prognosis(rng)
    test = diagnosis.filter(split="test")
    assert seed_metric("diagnosis", diagnosis) == pytest.approx(roc_auc_score(test["label"], test["score"]))
    per_fold = [
        concordance_index_censored(f["event"].to_numpy(), f["time"].to_numpy(), f["risk"].to_numpy())[0]
        for _, f in prognosis.group_by("repeat", "fold")
    ]
    assert seed_metric("prognosis", prognosis) == pytest.approx(np.mean(per_fold))
    with pytest.raises(ValueError, match="retrieval"):
        seed_metric("retrieval", diagnosis)


def test_seed_table_has_one_column_per_seed_and_marks_the_reported_one():
    rng = np.random.default_rng(1)
    runs = {("diagnosis", TRIMODAL, seed): _diagnosis(rng) for seed in (0, 3, 7)}
    runs |= {("prognosis", "ecg", seed): _prognosis(rng) for seed in (0, 3)}
    frame = seed_frame(runs)
    assert frame.height == 5 and set(frame["metric"]) == {"auc", "c_index"}
    text = seeds_markdown(frame, reference_seed=0)
    header = next(line for line in text.splitlines() if line.startswith("| task"))
    assert "seed 0 (reported)" in header and "seed 3 |" in header and "seed 7 |" in header
    auc = frame.filter(task="diagnosis")["value"].to_numpy()
    row = next(line for line in text.splitlines() if line.startswith("| diagnosis"))
    assert f"{auc.mean():.3f} ± {auc.std(ddof=1):.3f}" in row and f"{auc.min():.3f}–{auc.max():.3f}" in row
    prognosis_row = next(line for line in text.splitlines() if line.startswith("| prognosis"))
    assert prognosis_row.count("|") == header.count("|")  # seed 7 left empty for prognosis


def _seeds_config(workdir: Path, seeds: list[int], tasks: list[str]) -> tuple[str, str]:
    """A second config file: the run's own with only the `seeds` block replaced (its config.yaml is
    left as it is); snakemake's last --configfile wins."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["seeds"] = {"seeds": seeds, "tasks": tasks, "subsets": [TRIMODAL]}
    path = workdir / f"seeds-{'-'.join(map(str, seeds))}-{'-'.join(tasks)}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return ("--configfile", str(path))


@pytest.fixture(scope="module")
def seeded(trained_run, tmp_path_factory) -> Path:
    """A copy of the shared trained run: other tests compare the shared run's eval/ folder with fresh runs."""
    workdir = tmp_path_factory.mktemp("seeded")
    shutil.copytree(trained_run, workdir, symlinks=True, dirs_exist_ok=True)
    return workdir


@pytest.mark.slow
def test_seeds_target_retrains_with_other_seeds_beside_the_reported_run(seeded):
    override = _seeds_config(seeded, [5], ["diagnosis", "prognosis"])
    snakemake(seeded, "--cores", "2", "seeds", *override, timeout=1200)
    out = seeded / "results"
    table = pl.read_parquet(out / "eval/seeds.parquet")
    assert sorted(table["seed"].unique().to_list()) == [0, 5]
    reported = {
        "diagnosis": pl.read_parquet(out / "eval/diagnosis.parquet").filter(subset=TRIMODAL, metric="auc"),
        "prognosis": pl.read_parquet(out / "eval/prognosis.parquet").filter(subset=TRIMODAL, metric="c_index"),
    }
    for task, row in reported.items():
        assert table.filter(task=task, seed=0)["value"].item() == pytest.approx(row["value"].item())
        seed5 = pl.read_parquet(out / f"eval/seeds/predictions/seed5/{task}/{TRIMODAL}.parquet")
        assert table.filter(task=task, seed=5)["value"].item() == pytest.approx(seed_metric(task, seed5))
    reported_scores = pl.read_parquet(out / f"eval/predictions/diagnosis/{TRIMODAL}.parquet")["score"]
    seed5_scores = pl.read_parquet(out / f"eval/seeds/predictions/seed5/diagnosis/{TRIMODAL}.parquet")["score"]
    assert not np.allclose(reported_scores.to_numpy(), seed5_scores.to_numpy())  # really another seed
    assert "seed 5" in (out / "eval/SEEDS.md").read_text()
    dry = snakemake(seeded, "-n", "seeds", *override)
    assert planned_rules(dry) <= {"seeds"}, planned_rules(dry)


def test_seeds_sharing_ensemble_members_are_refused(seeded):
    """The trained run's diagnosis ensemble has 2 members: seed 1 would reuse the reported run's second model."""
    override = _seeds_config(seeded, [1], ["diagnosis"])
    proc = snakemake(seeded, "-n", "seeds", *override, check=False)
    assert proc.returncode != 0 and "share ensemble members" in proc.stdout + proc.stderr
