"""Benchmark of the ECG stage against its floor (run on demand, not a test).

    python -m hftri_mimic.tools.bench.ecg --sizes 1000 10000

For each size it writes that many MIMIC-layout WFDB records, then, each in a fresh process, times
(a) the floor: ``wfdb.rdrecord`` of every record, and (b) the whole per-record path of one ECG shard job
(read, checks, resampling, filtering, quality index, Zarr writing, index tables). It prints records/s,
the ratio of the two, and each process's peak RSS.

Both run under the same conditions: every record file is read once before timing (a warm page cache
for both), and floor and stage alternate over ``--repeats`` rounds (floor first in even rounds, stage
first in odd ones) so that load from other work on the machine hits both alike; the rates are the
medians over the rounds, the ratio is theirs, and the per-round ratios are printed too. The records and
the stage's outputs are deleted afterwards unless ``--workdir`` is given.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
import warnings
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from hftri_mimic.tools.bench.common import alternating_rounds, measure_in_fresh_process, warm_page_cache


def write_records(root: Path, n: int, seed: int = 0) -> pl.DataFrame:
    """n records in the MIMIC-IV-ECG layout (50 distinct synthetic signals, cycled) and their plan."""
    from hftri_mimic.demo.ecg import synth_ecg, write_mimic_ecg_record

    rng = np.random.default_rng(seed)
    signals = [
        synth_ecg(
            rng,
            qrs_ms=float(rng.uniform(80, 150)),
            t_amp=float(rng.uniform(-0.5, 1.2)),
            hr_bpm=float(rng.uniform(55, 100)),
        )
        for _ in range(50)
    ]
    rows = []
    for i in range(n):
        subject, study = 10_000_000 + i, 40_000_000 + i
        relpath = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
        write_mimic_ecg_record(
            root / Path(relpath).parent,
            study_id=study,
            subject_id=subject,
            signal_mv=signals[i % len(signals)],
            ecg_time=datetime(2150, 1, 1),
        )
        rows.append({"subject_id": subject, "ecg_study_id": study, "ecg_path": relpath, "shard": 0})
    return pl.DataFrame(rows)


def run_floor(root: str, plan: str) -> dict:
    import wfdb

    paths = pl.read_parquet(plan)["ecg_path"].to_list()
    t0 = time.perf_counter()
    for relpath in paths:
        wfdb.rdrecord(str(Path(root) / relpath))
    return {"seconds": time.perf_counter() - t0, "records": len(paths)}


def run_stage(root: str, plan: str) -> dict:
    from hftri_mimic.ecg.signal import EcgSettings
    from hftri_mimic.ecg.stage import process_shard

    out = Path(tempfile.mkdtemp(prefix="ecg_bench_stage_"))
    try:
        t0 = time.perf_counter()
        stats = process_shard(
            plan,
            0,
            root,
            EcgSettings(),
            out / "0.zarr",
            out / "0.measured.parquet",
            out / "0.exclusions.parquet",
            "ecg/shards/0.zarr",
        )
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "records": stats["records"], "measured": stats["measured"]}


def measure(mode: str, root: Path, plan: Path) -> dict:
    """Run one mode in a fresh interpreter (imports warmed up first) and return its timing and peak RSS."""
    return measure_in_fresh_process(
        "import wfdb, neurokit2, zarr; from hftri_mimic.tools.bench.ecg import run_floor, run_stage",
        f"run_{mode}({str(root)!r}, {str(plan)!r})",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3, help="alternating floor/stage rounds per size")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the records (kept; default: temp)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(
        f"page cache warm for both; floor and stage alternate, {args.repeats} rounds each in fresh processes; "
        "rates are medians"
    )
    print(
        f"{'records':>8} {'floor rec/s':>12} {'stage rec/s':>12} {'ratio':>6} {'round ratios':>18} "
        f"{'floor RSS MB':>13} {'stage RSS MB':>13}"
    )
    for n in args.sizes:
        base = args.workdir or Path(tempfile.mkdtemp(prefix="ecg_bench_"))
        root = base / f"ecg_{n}"
        try:
            plan = root / "plan.parquet"
            write_records(root, n).write_parquet(plan)
            warm_page_cache(root)
            runs = alternating_rounds(partial(measure, root=root, plan=plan), ("floor", "stage"), args.repeats)
            rates = {mode: [r["records"] / r["seconds"] for r in rs] for mode, rs in runs.items()}
            floor_rate, stage_rate = (statistics.median(rates[mode]) for mode in ("floor", "stage"))
            ratios = [f / s for f, s in zip(rates["floor"], rates["stage"], strict=True)]
            rss = {mode: max(r["peak_rss_mb"] for r in rs) for mode, rs in runs.items()}
            round_ratios = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(
                f"{n:>8} {floor_rate:>12.1f} {stage_rate:>12.1f} {floor_rate / stage_rate:>6.2f} {round_ratios:>18} "
                f"{rss['floor']:>13.0f} {rss['stage']:>13.0f}",
                flush=True,
            )
        finally:
            if args.workdir is None:
                shutil.rmtree(base, ignore_errors=True)
    print(
        f"ECG benchmark done; this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
