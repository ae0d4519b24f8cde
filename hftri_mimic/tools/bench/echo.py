"""Benchmark of the echo stage against its decode floor (run on demand, not a test).

    python -m hftri_mimic.tools.bench.echo --studies 10 40 --height 480 --width 640

Writes demo-layout studies (11-14 multi-frame JPEG DICOMs and 1-3 stills each), then, each in a fresh
process, times (a) the floors: decoding exactly the frames the stage uses (frames 0, stride, ... of every
cine; stills are only opened), with pydicom and, the lower floor, the encapsulated JPEG bytes with OpenCV
alone (raw), and (b) one echo shard job over the same studies (read, decode, mask, crop, resize, view
classification at demo size, best clip per view, Zarr writing). Prints DICOMs/s, frames/s, the ratios and
each process's peak RSS.

Both run under the same conditions: every file is read once before timing (a warm page cache for all),
and the raw floor and the stage alternate over ``--repeats`` rounds (floor first in even rounds, stage
first in odd ones) so that load from other work on the machine hits both alike; rates are the medians
over the rounds, the ratio is theirs, and the range of the per-round ratios is printed too. The pydicom
floor (slow) runs once per size. The studies and the stage's outputs are deleted afterwards unless
``--workdir`` is given.
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
from pathlib import Path

import numpy as np
import polars as pl

from hftri_mimic.demo.records import VIEW_PRESENCE
from hftri_mimic.echo.dicom import VIEWS, EchoSettings
from hftri_mimic.tools.bench.common import alternating_rounds, measure_in_fresh_process, warm_page_cache

SETTINGS = EchoSettings(size=64, classify_size=64)


def write_studies(root: Path, n_studies: int, height: int, width: int, seed: int = 0) -> pl.DataFrame:
    from hftri_mimic.demo.echo import synth_cine, synth_doppler_still, write_us_multiframe, write_us_still

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        subject, study = 10_000_000 + s, 90_000_000 + s
        views = [v for v, p in zip(VIEWS, VIEW_PRESENCE, strict=True) if rng.random() < p] + ["still"] * 2
        for i, view in enumerate(views, start=1):
            rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{study}_{i:04d}.dcm"
            common = dict(
                subject_id=subject, study_id=study, acquisition_datetime=datetime(2150, 1, 1), instance_number=i
            )
            if view == "still":
                write_us_still(root / rel, synth_doppler_still(rng, height=height, width=width), **common)
            else:
                frames = synth_cine(
                    rng,
                    view=view,
                    n_frames=int(rng.integers(30, 60)),
                    height=height,
                    width=width,
                    lv_scale=1.0,
                    wall_motion=0.2,
                    hr_bpm=70.0,
                    frame_time_ms=33.3,
                )
                write_us_multiframe(root / rel, frames, frame_time_ms=33.3, **common)
            rows.append({"subject_id": subject, "echo_study_id": study, "dicom_filepath": rel, "shard": 0})
    return pl.DataFrame(rows)


def run_floor(root: str, plan: str, raw: bool = False) -> dict:
    """Decode exactly the frames the stage uses: with pydicom (``raw=False``) or, the lower floor, the
    encapsulated JPEG bytes with OpenCV alone (``raw=True``)."""
    import cv2
    import pydicom
    from pydicom.encaps import get_frame
    from pydicom.pixels import pixel_array

    from hftri_mimic.echo.dicom import frame_indices

    paths = pl.read_parquet(plan)["dicom_filepath"].to_list()
    frames = 0
    t0 = time.perf_counter()
    for rel in paths:
        ds = pydicom.dcmread(Path(root) / rel)
        n = int(getattr(ds, "NumberOfFrames", 1))
        if n <= 1:
            continue
        for index in frame_indices(n, SETTINGS):
            if raw:
                jpeg = get_frame(ds.PixelData, index, number_of_frames=n)
                cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            else:
                pixel_array(ds, index=index)
            frames += 1
    return {"seconds": time.perf_counter() - t0, "dicoms": len(paths), "frames": frames}


def run_stage(root: str, plan: str, classifier: str) -> dict:
    from hftri_mimic.echo.stage import process_shard
    from hftri_mimic.echo.view_classifier import ViewClassifierConfig

    out = Path(tempfile.mkdtemp(prefix="echo_bench_stage_"))
    config = ViewClassifierConfig(variant="convnext_mini", input_size=SETTINGS.classify_size)
    try:
        t0 = time.perf_counter()
        stats = process_shard(
            plan,
            0,
            root,
            SETTINGS,
            classifier,
            config,
            out / "0.zarr",
            out / "0.index.parquet",
            out / "0.dicoms.parquet",
            out / "0.exclusions.parquet",
            "echo/shards/0.zarr",
        )
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "dicoms": stats["dicoms"], "frames": stats["frames"]}


def measure(call: str) -> dict:
    return measure_in_fresh_process(
        "import pydicom, torch, cv2, zarr; from hftri_mimic.tools.bench.echo import run_floor, run_stage", call
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3, help="alternating raw-floor/stage rounds per size")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the studies (kept; default: temp)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from hftri_mimic.echo.view_classifier import ViewClassifierConfig, build_view_classifier, save_view_classifier

    base = args.workdir or Path(tempfile.mkdtemp(prefix="echo_bench_"))
    try:
        classifier = base / "view_classifier.pt"  # untrained: costs the same to run as a trained one
        base.mkdir(parents=True, exist_ok=True)
        save_view_classifier(
            build_view_classifier(ViewClassifierConfig(variant="convnext_mini", input_size=64)), classifier
        )
        print(
            f"page cache warm for all; raw floor and stage alternate, {args.repeats} rounds each in fresh "
            "processes; rates are medians; pydicom floor once"
        )
        print(
            f"{'studies':>7} {'DICOMs':>6} {'frames':>6} {'pydicom fr/s':>12} {'raw fr/s':>9} {'stage dcm/s':>11} "
            f"{'stage fr/s':>10} {'vs pydicom':>10} {'vs raw':>6} {'round ratios':>12} {'floor RSS MB':>12} "
            f"{'stage RSS MB':>12}"
        )
        for n in args.studies:
            root = base / f"echo_{n}"
            plan = root / "plan.parquet"
            write_studies(root, n, args.height, args.width).write_parquet(plan)
            warm_page_cache(root)
            calls = {
                "raw": f"run_floor({str(root)!r}, {str(plan)!r}, raw=True)",
                "stage": f"run_stage({str(root)!r}, {str(plan)!r}, {str(classifier)!r})",
            }
            runs = alternating_rounds(lambda mode, calls=calls: measure(calls[mode]), ("raw", "stage"), args.repeats)
            floor = measure(f"run_floor({str(root)!r}, {str(plan)!r})")
            rates = {mode: [r["frames"] / r["seconds"] for r in rs] for mode, rs in runs.items()}
            raw_rate, stage_rate = (statistics.median(rates[mode]) for mode in ("raw", "stage"))
            ratios = [f / s for f, s in zip(rates["raw"], rates["stage"], strict=True)]
            pydicom_rate = floor["frames"] / floor["seconds"]
            stage = runs["stage"][0]
            if any(r["frames"] != stage["frames"] for r in [floor, *runs["raw"], *runs["stage"]]):
                raise RuntimeError(f"floor and stage decoded different frame counts at {n} studies")
            floor_rss = max(floor["peak_rss_mb"], *(r["peak_rss_mb"] for r in runs["raw"]))
            stage_rss = max(r["peak_rss_mb"] for r in runs["stage"])
            print(
                f"{n:>7} {stage['dicoms']:>6} {stage['frames']:>6} {pydicom_rate:>12.1f} {raw_rate:>9.1f} "
                f"{stage_rate * stage['dicoms'] / stage['frames']:>11.1f} {stage_rate:>10.1f} "
                f"{pydicom_rate / stage_rate:>10.2f} {raw_rate / stage_rate:>6.2f} "
                f"{f'{min(ratios):.2f}-{max(ratios):.2f}':>12} {floor_rss:>12.0f} {stage_rss:>12.0f}",
                flush=True,
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    print(
        f"echo benchmark done ({args.height}x{args.width} cines); ratios = stage time / floor time; "
        f"this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
