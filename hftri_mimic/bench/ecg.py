"""Benchmark of the ECG stage against its floor (run on demand, not a test).

    python -m hftri_mimic.bench.ecg --sizes 1000 10000

For each size it writes that many MIMIC-layout WFDB records, then, each in a fresh process, times
(a) the floor: ``wfdb.rdrecord`` of every record, and (b) the whole per-record path of one ECG shard job
(read, checks, resampling, filtering, quality index, Zarr writing, index tables). It prints records/s,
the ratio of the two, and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl


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
    from hftri_mimic.ecg import EcgSettings
    from hftri_mimic.ecg_stage import process_shard

    out = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    stats = process_shard(
        plan,
        0,
        root,
        EcgSettings(),
        out / "0.zarr",
        out / "0.index.parquet",
        out / "0.exclusions.parquet",
        "ecg/shards/0.zarr",
    )
    return {"seconds": time.perf_counter() - t0, "records": stats["records"], "kept": stats["kept"]}


def measure(mode: str, root: Path, plan: Path) -> dict:
    """Run one mode in a fresh interpreter (imports warmed up first) and return its timing and peak RSS."""
    code = (
        "import json, resource, warnings; warnings.simplefilter('ignore');"
        "import wfdb, neurokit2, zarr;"
        "from hftri_mimic.bench.ecg import run_floor, run_stage;"
        f"r = run_{mode}({str(root)!r}, {str(plan)!r});"
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        "print(json.dumps(r))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the records (default: a temp dir)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(
        f"{'records':>8} {'floor rec/s':>12} {'stage rec/s':>12} {'ratio':>6} {'floor RSS MB':>13} {'stage RSS MB':>13}"
    )
    for n in args.sizes:
        root = Path(args.workdir or tempfile.mkdtemp()) / f"ecg_{n}"
        plan = root / "plan.parquet"
        write_records(root, n).write_parquet(plan)
        floor = measure("floor", root, plan)
        stage = measure("stage", root, plan)
        floor_rate = floor["records"] / floor["seconds"]
        stage_rate = stage["records"] / stage["seconds"]
        print(
            f"{n:>8} {floor_rate:>12.1f} {stage_rate:>12.1f} {floor_rate / stage_rate:>6.2f} "
            f"{floor['peak_rss_mb']:>13.0f} {stage['peak_rss_mb']:>13.0f}"
        )
    print(
        f"ECG benchmark done; this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
