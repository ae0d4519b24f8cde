"""Benchmark of the cohort stage (ingest + cohort + labels) against its floor (run on demand, not a test).

    python -m hftri_mimic.tools.bench.cohort --scales 0.01 0.1

For each scale it writes MIMIC-IV-sized hosp tables and ECG/echo record lists at that fraction of MIMIC-IV v3.1
(the demo generator's ``scale`` mode, no signal files; generation is timed but is not part of the stage), then,
each in a fresh process:

- the floor: DuckDB ``count(*)`` over every raw table the stage reads (the files of its ``ingest_table`` jobs);
- the stage: ``snakemake --cores N`` of the cohort targets (``cohort/cohort.parquet``, ``cohort/attrition.parquet``)
  on a ``mimic`` source pointing at those files: every job's start-up, DuckDB ingest to Parquet, the SQL
  concepts, the cohort and its attrition.

It prints wall time, the stage/floor ratio, the peak RSS of each (the largest single process) and, for two or more
scales, the ratio of the largest to the smallest scale's stage time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hftri_mimic.common.db import sql_literal
from hftri_mimic.tools.bench.common import alternating_rounds, warm_page_cache

REPO = Path(__file__).resolve().parents[3]
STAGE_TARGETS = ("cohort/cohort.parquet", "cohort/attrition.parquet")


def generate(root: Path, scale: float, seed: int) -> dict:
    from hftri_mimic.demo.generate import DemoSpec, generate_demo_source

    return generate_demo_source(root / "source", root / "truth", DemoSpec(scale=scale, seed=seed), write_signals=False)


def stage_config(root: Path) -> Path:
    """The repo's config.yaml with a ``mimic`` source at the generated tree and outputs under ``root/results``."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["out_dir"] = str(root / "results")
    config["source"] = {
        "kind": "mimic",
        "hosp_root": str(root / "source/hosp"),
        "ecg_root": str(root / "source/ecg"),
        "echo_root": str(root / "source/echo"),
    }
    # A real echo source needs EchoPrime's view-classifier weights configured; the cohort targets never read them.
    placeholder = root / "view_classifier_unused.pt"
    placeholder.touch()
    config["echo"]["view_classifier"]["weights"] = str(placeholder)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_stage(root: str, cores: int) -> dict:
    """Run the stage with Snakemake; returns its wall time and the raw files its ingest jobs read."""
    root_path = Path(root)
    # A rerun must do all the work again (and a killed earlier run may have left Snakemake's lock).
    shutil.rmtree(root_path / "results", ignore_errors=True)
    shutil.rmtree(root_path / ".snakemake", ignore_errors=True)
    config = stage_config(root_path)
    targets = [str(root_path / "results" / t) for t in STAGE_TARGETS]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", root]
    command += ["--configfile", str(config), "--cores", str(cores), *targets]
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cohort stage failed:\n{proc.stderr[-4000:]}")
    from hftri_mimic.ingest.tables import ECG_TABLES, ECHO_TABLES, TABLES

    ingested = sorted(p.name.removesuffix(".parquet") for p in (root_path / "results/parquet").glob("*.parquet"))
    files = []
    for table in (t for t in ingested if t in TABLES):
        tree = "ecg" if table in ECG_TABLES else "echo" if table in ECHO_TABLES else "hosp"
        files.append(str(root_path / "source" / tree / TABLES[table].relpath))
    return {"seconds": seconds, "files": files}


def run_floor(files: list[str]) -> dict:
    """DuckDB count(*) over each raw file (CSV sniffing and gzip decompression included, as in ingest)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    t0 = time.perf_counter()
    rows = {
        Path(f).name: con.execute(f"SELECT count(*) FROM read_csv({sql_literal(str(f))})").fetchone()[0] for f in files
    }
    return {"seconds": time.perf_counter() - t0, "rows": rows}


def measure(kind: str, payload: dict) -> dict:
    """Run one measurement (``run_floor`` / ``run_stage`` / ``generate_counts``) in a fresh interpreter and record the
    peak RSS of the largest single process of its tree (the stage's Snakemake jobs included), sampled every 50 ms.

    ``ru_maxrss`` cannot be used here: on Linux a forked child starts with its parent's resident pages counted."""
    import psutil

    code = (
        "import json, sys; from hftri_mimic.tools.bench import cohort as b; "
        f"print('RESULT', json.dumps(b.run_{kind}(**json.loads(sys.argv[1]))))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(payload)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for process in tree:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{stderr[-4000:]}")
    result = json.loads(
        next(line for line in stdout.splitlines() if line.startswith("RESULT ")).removeprefix("RESULT ")
    )
    result["peak_rss_mb"] = peak / 2**20
    return result


def run_generate_counts(root: str, scale: float, seed: int) -> dict:
    t0 = time.perf_counter()
    counts = generate(Path(root), scale, seed)
    return {"counts": counts, "seconds": time.perf_counter() - t0}


def generate_once(root: Path, scale: float, seed: int, reuse: bool) -> dict:
    """Generate the source tree (timed, in a fresh process), or read back the record of an earlier generation."""
    record = root / "generated.json"
    if reuse and record.exists():
        generated = json.loads(record.read_text())
        if generated["scale"] == scale and generated["seed"] == seed:
            return generated
    generated = measure("generate_counts", {"root": str(root), "scale": scale, "seed": seed})
    generated.update(scale=scale, seed=seed)
    record.write_text(json.dumps(generated))
    return generated


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the upper median for an even count), its peak RSS the largest of all."""
    chosen = dict(sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2])
    chosen["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    chosen["all_seconds"] = [run["seconds"] for run in runs]
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20251)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated trees here (default: temp)")
    parser.add_argument(
        "--reuse", action="store_true", help="with --workdir: use a tree generated there before (same scale and seed)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="floor and stage runs per scale, alternating")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        base = args.workdir or Path(tmp)
        for scale in args.scales:
            root = base / f"scale{scale:g}"
            root.mkdir(parents=True, exist_ok=True)
            generated = generate_once(root, scale, args.seed, reuse=args.reuse and args.workdir is not None)
            counts, generation = generated["counts"], generated["seconds"]
            warm_page_cache(root / "source")  # both sides find the raw files in memory, whichever runs first
            stage_files: list[str] = []  # the raw files of the latest stage run: what the floor counts

            def run_side(mode: str, root: Path = root, stage_files: list[str] = stage_files) -> dict:
                if mode == "stage":
                    result = measure("stage", {"root": str(root), "cores": args.cores})
                    stage_files[:] = result["files"]
                    return result
                return measure("floor", {"files": stage_files})

            # The stage runs first in the first round (the floor needs its file list), then the order alternates.
            runs = alternating_rounds(run_side, ("stage", "floor"), args.rounds)
            stages, floors = runs["stage"], runs["floor"]
            stage, floor = median_run(stages), median_run(floors)
            rows.append(
                {
                    "scale": scale,
                    "patients": counts["patients"],
                    "labevents": counts["labevents"],
                    "generation_s": generation,
                    "floor_s": floor["seconds"],
                    "stage_s": stage["seconds"],
                    "ratio": stage["seconds"] / floor["seconds"],
                    "floor_rss_mb": floor["peak_rss_mb"],
                    "stage_rss_mb": stage["peak_rss_mb"],
                    "tables": len(stage["files"]),
                }
            )
            row = rows[-1]
            print(
                f"scale {scale:g}: {row['patients']:,} patients, {row['labevents']:,} labevents, "
                f"{row['tables']} raw tables; generation {generation:.0f} s ({generated['peak_rss_mb']:.0f} MB); "
                f"floor {floor['seconds']:.1f} s ({floor['peak_rss_mb']:.0f} MB); "
                f"stage {stage['seconds']:.1f} s ({stage['peak_rss_mb']:.0f} MB); ratio {row['ratio']:.1f}"
                + (
                    f" (medians of {args.rounds} rounds; floor "
                    + ", ".join(f"{x:.1f}" for x in floor["all_seconds"])
                    + " s; stage "
                    + ", ".join(f"{x:.1f}" for x in stage["all_seconds"])
                    + " s)"
                    if args.rounds > 1
                    else ""
                ),
                flush=True,
            )
    print("| scale | patients | labevents | floor s | stage s | stage / floor | peak RSS floor / stage |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scale']:g} | {r['patients']:,} | {r['labevents']:,} | {r['floor_s']:.1f} | {r['stage_s']:.1f} | "
            f"{r['ratio']:.1f} | {r['floor_rss_mb']:.0f} / {r['stage_rss_mb']:.0f} MB |"
        )
    if len(rows) > 1:
        largest, smallest = rows[-1], rows[0]
        ratio = largest["stage_s"] / smallest["stage_s"]
        print(f"stage time ratio, scale {largest['scale']:g} / {smallest['scale']:g}: {ratio:.1f}")


if __name__ == "__main__":
    main()
