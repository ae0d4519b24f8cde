"""Benchmark of the echo stage against its decode floor (run on demand, not a test).

    python -m hftri_mimic.bench.echo --studies 10 40 --height 480 --width 640

Writes demo-layout studies (11-14 multi-frame JPEG DICOMs and 1-3 stills each), then, each in a fresh
process, times (a) the floor: pydicom decoding exactly the frames the stage uses (frames 0, stride, ...
of every cine; stills are only opened) and (b) one echo shard job over the same studies (read, decode,
mask, crop, resize, view classification at demo size, best clip per view, Zarr writing). Prints DICOMs/s,
frames/s, their ratio and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from hftri_mimic.demo.records import VIEW_PRESENCE
from hftri_mimic.echo import VIEWS, EchoSettings

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

    from hftri_mimic.echo import frame_indices

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
    from hftri_mimic.echo_stage import process_shard
    from hftri_mimic.view_classifier import ViewClassifierConfig

    out = Path(tempfile.mkdtemp())
    config = ViewClassifierConfig(variant="convnext_mini", input_size=SETTINGS.classify_size)
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
    return {"seconds": time.perf_counter() - t0, "dicoms": stats["dicoms"], "frames": stats["frames"]}


def measure(call: str) -> dict:
    code = (
        "import json, resource, warnings; warnings.simplefilter('ignore');"
        "import pydicom, torch, cv2, zarr;"
        "from hftri_mimic.bench.echo import run_floor, run_stage;"
        f"r = {call};"
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        "print(json.dumps(r))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from hftri_mimic.view_classifier import ViewClassifierConfig, build_view_classifier, save_view_classifier

    base = Path(args.workdir or tempfile.mkdtemp())
    classifier = base / "view_classifier.pt"  # untrained: costs the same to run as a trained one
    save_view_classifier(
        build_view_classifier(ViewClassifierConfig(variant="convnext_mini", input_size=64)), classifier
    )
    header = (
        f"{'studies':>7} {'DICOMs':>6} {'frames':>6} {'pydicom fr/s':>12} {'raw fr/s':>9} {'stage dcm/s':>11} "
        f"{'stage fr/s':>10} {'vs pydicom':>10} {'vs raw':>6} {'floor RSS MB':>12} {'stage RSS MB':>12}"
    )
    print(header)
    for n in args.studies:
        root = base / f"echo_{n}"
        plan = root / "plan.parquet"
        write_studies(root, n, args.height, args.width).write_parquet(plan)
        floor = measure(f"run_floor({str(root)!r}, {str(plan)!r})")
        raw = measure(f"run_floor({str(root)!r}, {str(plan)!r}, raw=True)")
        stage = measure(f"run_stage({str(root)!r}, {str(plan)!r}, {str(classifier)!r})")
        floor_rss = max(floor["peak_rss_mb"], raw["peak_rss_mb"])
        print(
            f"{n:>7} {floor['dicoms']:>6} {floor['frames']:>6} {floor['frames'] / floor['seconds']:>12.1f} "
            f"{raw['frames'] / raw['seconds']:>9.1f} {stage['dicoms'] / stage['seconds']:>11.1f} "
            f"{stage['frames'] / stage['seconds']:>10.1f} {stage['seconds'] / floor['seconds']:>10.2f} "
            f"{stage['seconds'] / raw['seconds']:>6.2f} {floor_rss:>12.0f} {stage['peak_rss_mb']:>12.0f}"
        )
    print(f"echo benchmark done ({args.height}x{args.width} cines); ratios = stage time / floor time")


if __name__ == "__main__":
    main()
