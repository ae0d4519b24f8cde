"""Preflight: check everything a long run depends on, before it starts, and report every problem at once.

    python -m hftri_mimic.tools.preflight --configfile workflow/configs/real.yaml

The config is config.yaml with each ``--configfile`` laid over it, as Snakemake lays them. Checked, each a row of
one table (docs/RUNNING.md, Preflight):

- config: the merged config validates against the workflow's schema;
- sources: each needed file present with its columns, and a sample of its first rows read by the ingest's own reader
  (timestamps, numbers; the ingest's rejected-share bound applies);
- record lists: a seeded sample of the ECG records and echo DICOMs they name, present under their roots;
- checkpoints: each configured one loads strictly into the configured model (an unset one is a problem in a real run:
  the encoder would be random);
- GPU: visible devices, bf16 support (a warning only: preflight may run on a login node without one);
- disk: free space where the outputs go against an upper bound of what the run writes;
- what the run touches: patients, admissions, ECG records, echo studies and DICOMs, and the bytes read.

Exit status 1 when any row is a problem. Nothing here prints a patient value: counts, file names and value shapes.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

from hftri_mimic.common.db import sql_literal
from hftri_mimic.ingest.tables import (
    TABLES,
    SourceError,
    check_source_table,
    ingest_table,
    source_roots,
    source_tree,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"

SAMPLE_ROWS = 5000  # first rows of each source file read by the ingest's reader
SAMPLE_RECORDS = 200  # ECG records and DICOMs looked up under their roots
# Upper bounds of what the run stores per patient (uncompressed; Zarr compression only lowers them): one ECG of
# 12 x 2500 float32, one echo study of 11 views x frames x size x size x 3 uint8, plus tables and models.
ECG_RECORD_BYTES = 12 * 2500 * 4
FIXED_OUTPUT_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Row:
    area: str
    item: str
    status: str  # ok | warning | problem
    detail: str


def load_config(configfiles: list[Path]) -> dict:
    """config.yaml, then each overlay, merged as Snakemake merges a later --configfile."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in configfiles:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


# ------------------------------------------------------------------------------------------------------------ checks


def check_config(config: dict) -> Iterator[Row]:
    from snakemake.utils import validate

    try:
        validate(copy.deepcopy(config), str(SCHEMA))
    except Exception as err:  # snakemake's WorkflowError wraps the jsonschema error
        yield Row("config", "schema", "problem", " ".join(str(err).split())[:400])
        return
    yield Row("config", "schema", "ok", f"source.kind {config['source']['kind']}, out_dir {config['out_dir']}")


def _head(path: Path, rows: int, dest: Path) -> Path:
    """The header and first ``rows`` data lines of a CSV (or CSV.gz) as a plain CSV."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as src, open(dest, "w", newline="") as out:
        for i, line in enumerate(src):
            if i > rows:
                break
            out.write(line)
    return dest


def check_sources(config: dict, roots: dict[str, Path | None], workdir: Path) -> Iterator[Row]:
    for table, spec in TABLES.items():
        root = roots[source_tree(table)]
        if root is None:
            continue
        path = root / spec.relpath
        try:
            check_source_table(table, path)
        except SourceError as err:
            yield Row("source", spec.relpath, "problem", str(err))
            continue
        sample = _head(path, SAMPLE_ROWS, workdir / f"{table}.csv")
        try:
            kept = ingest_table(
                table,
                sample,
                workdir / f"{table}.parquet",
                max_rejected_share=config["ingest"]["max_rejected_share"],
            )
        except (SourceError, duckdb.Error) as err:
            detail = str(err).splitlines()[0].replace(str(sample), f"{path} (first rows)")
            yield Row("source", spec.relpath, "problem", detail)
            continue
        excluded = duckdb.sql(f"SELECT count(*) FROM read_parquet({_path(workdir / f'{table}.exclusions.parquet')})")
        n_excluded = excluded.fetchall()[0][0]
        yield Row(
            "source",
            spec.relpath,
            "ok",
            f"columns present; first {kept + n_excluded} rows read: {kept} kept, {n_excluded} excluded",
        )


def _sample(values: list[str], seed: int = 0) -> list[str]:
    return random.Random(seed).sample(values, min(SAMPLE_RECORDS, len(values)))


def check_record_files(roots: dict[str, Path | None], out_dir: Path | str) -> Iterator[Row]:
    """A seeded sample of the files the ECG and echo stages will read, looked up under their roots: from the cohort's
    lists when `download_cohort` wrote them (results/download/<tree>_files.txt: the cohort-first download fetches only
    these), else from the record lists (a tree mirrored whole)."""
    lists = {
        "ecg": ("record_list.csv", "path", lambda p: [f"{p}.hea", f"{p}.dat"]),
        "echo": ("echo-record-list.csv", "dicom_filepath", lambda p: [p]),
    }
    for kind, (name, column, files_of) in lists.items():
        root = roots[kind]
        cohort_list = Path(out_dir) / f"download/{kind}_files.txt"
        if root is None or not (root / name).is_file():
            continue
        if cohort_list.is_file():
            name = f"{kind} cohort files"
            files = [line for line in cohort_list.read_text().splitlines() if line and not line.startswith("#")]
            needed = _sample(files)
            what = f"sampled cohort files (of {len(files)} in {cohort_list.name})"
        else:
            try:
                paths = [r[0] for r in duckdb.sql(f"SELECT {column} FROM {_csv(root / name)}").fetchall()]
            except duckdb.Error as err:
                yield Row("records", name, "problem", f"{root / name}: cannot be read ({str(err).splitlines()[0]})")
                continue
            sample = _sample([p for p in paths if p])
            needed = [f for p in sample for f in files_of(p)]
            what = f"files of {len(sample)} sampled records"
        missing = [f for f in needed if not (root / f).is_file()]
        status = "problem" if missing else "ok"
        detail = f"{len(needed) - len(missing)} of {len(needed)} {what} present"
        if missing:  # shapes only: a record path holds the subject and study ids
            shapes = ", ".join(sorted({re.sub(r"\d", "9", f) for f in missing})[:3])
            detail += (
                f" under {root}; missing files like {shapes} (an incomplete download? `snakemake download_cohort` "
                "fetches the cohort's files)"
            )
        yield Row("records", name, status, detail)


def _checkpoint_loaders(config: dict) -> dict[str, tuple[str | None, Callable[[], object]]]:
    from hftri_mimic.echo.view_classifier import ViewClassifierConfig, load_view_classifier
    from models.encoders.ecg import STMEMEncoder
    from models.encoders.echo import EchoPrimeEncoder
    from models.encoders.text import TextEncoder
    from models.training.configuration import ModelConfig

    parts = ModelConfig.from_dict(config["model"])  # the sizes the training jobs build
    classifier = config["echo"]["view_classifier"]
    view_config = ViewClassifierConfig(variant=classifier["variant"], input_size=config["echo"]["classify_size"])
    return {
        "model.text.folder": (parts.text.folder, lambda: TextEncoder.from_config(parts.text)),
        "model.ecg.checkpoint": (parts.ecg.checkpoint, lambda: STMEMEncoder(parts.ecg)),
        "model.echo.checkpoint": (parts.echo.checkpoint, lambda: EchoPrimeEncoder(parts.echo)),
        "echo.view_classifier.weights": (
            classifier["weights"],
            lambda: load_view_classifier(classifier["weights"], view_config),
        ),
    }


def check_checkpoints(config: dict) -> Iterator[Row]:
    real = config["source"]["kind"] != "demo"
    try:
        loaders = _checkpoint_loaders(config)
    except (ValueError, TypeError) as err:
        yield Row("checkpoint", "model", "problem", f"the model config does not build: {err}")
        return
    for key, (path, load) in loaders.items():
        if not path:
            if real:
                yield Row("checkpoint", key, "problem", "not set: the encoder would be randomly initialised")
            elif key == "echo.view_classifier.weights":
                yield Row("checkpoint", key, "ok", "not set: the demo trains one on its ground-truth views")
            else:
                yield Row("checkpoint", key, "ok", "not set: random weights (the demo)")
            continue
        try:
            load()
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            yield Row("checkpoint", key, "problem", " ".join(str(err).split())[:500])
            continue
        yield Row("checkpoint", key, "ok", f"{path} loads strictly")


def check_gpu(config: dict) -> Iterator[Row]:
    import torch

    optim = config["train"]["optim"]
    if not torch.cuda.is_available():
        needs = optim["device"] == "cuda" or optim["amp"] == "bf16"
        detail = "no CUDA device visible here"
        if needs:
            detail += f" (train.optim device {optim['device']}, amp {optim['amp']}): training jobs need a GPU node"
        yield Row("gpu", "cuda", "warning" if needs else "ok", detail)
        return
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    bf16 = torch.cuda.is_bf16_supported()
    status = "ok" if bf16 or optim["amp"] != "bf16" else "problem"
    yield Row(
        "gpu",
        "cuda",
        status,
        f"{len(names)} visible ({', '.join(names)}); bf16 {'supported' if bf16 else 'NOT supported'}",
    )


def _path(path: Path) -> str:
    return sql_literal(str(path))  # quoted: a folder name never changes the query


def _csv(path: Path) -> str:
    """A CSV (or CSV.gz) as text columns, for counting and listing."""
    return f"read_csv({_path(path)}, all_varchar = true)"


def _count(sql: str) -> int:
    return int(duckdb.sql(sql).fetchall()[0][0])


def run_size(config: dict, roots: dict[str, Path | None]) -> tuple[list[Row], int]:
    """What the run touches (counts from the source files, bytes read) and an upper bound of what it writes."""
    rows, read_bytes, patients_with = [], 0, {}
    for table, spec in TABLES.items():
        root = roots[source_tree(table)]
        if root is not None and (root / spec.relpath).is_file():
            read_bytes += (root / spec.relpath).stat().st_size
    hosp = roots["hosp"]
    if hosp is not None and all((hosp / f"{t}.csv.gz").is_file() for t in ("patients", "admissions")):
        patients = _count(f"SELECT count(*) FROM {_csv(hosp / 'patients.csv.gz')}")
        admissions = _count(f"SELECT count(*) FROM {_csv(hosp / 'admissions.csv.gz')}")
        rows.append(Row("run", "hospital", "ok", f"{patients} patients, {admissions} admissions"))
    ecg = roots["ecg"]
    if ecg is not None and (ecg / "record_list.csv").is_file():
        listed = _csv(ecg / "record_list.csv")
        n, subjects = duckdb.sql(f"SELECT count(*), count(DISTINCT subject_id) FROM {listed}").fetchall()[0]
        patients_with["ecg"] = subjects
        sample = _sample([r[0] for r in duckdb.sql(f"SELECT path FROM {listed}").fetchall()])
        sizes = [
            (ecg / f"{p}{ext}").stat().st_size
            for p in sample
            for ext in (".hea", ".dat")
            if (ecg / f"{p}{ext}").is_file()
        ]
        per_record = 2 * sum(sizes) / max(len(sizes), 1)
        rows.append(Row("run", "ECG", "ok", f"{n} records of {subjects} patients (~{_gb(n * per_record)} if all read)"))
    echo = roots["echo"]
    if echo is not None and (echo / "echo-record-list.csv").is_file():
        listed = _csv(echo / "echo-record-list.csv")
        dicoms, studies, subjects = duckdb.sql(
            f"SELECT count(*), count(DISTINCT study_id), count(DISTINCT subject_id) FROM {listed}"
        ).fetchall()[0]
        patients_with["echo"] = subjects
        sample = _sample([r[0] for r in duckdb.sql(f"SELECT dicom_filepath FROM {listed}").fetchall()])
        sizes = [(echo / p).stat().st_size for p in sample if (echo / p).is_file()]
        per_dicom = sum(sizes) / max(len(sizes), 1)
        rows.append(
            Row(
                "run",
                "echo",
                "ok",
                f"{dicoms} DICOMs of {studies} studies, {subjects} patients (~{_gb(dicoms * per_dicom)})",
            )
        )
    rows.append(Row("run", "read", "ok", f"source tables {_gb(read_bytes)}"))
    echo_cfg = config["echo"]
    study_bytes = 11 * echo_cfg["frames"] * echo_cfg["size"] ** 2 * 3
    write_bytes = FIXED_OUTPUT_BYTES + patients_with.get("ecg", 0) * ECG_RECORD_BYTES
    write_bytes += patients_with.get("echo", 0) * study_bytes
    return rows, write_bytes


def _gb(n: float) -> str:
    return f"{n / 1024**3:.2f} GB" if n >= 1024**3 else f"{n / 1024**2:.1f} MB"


def check_disk(config: dict, write_bytes: int) -> Iterator[Row]:
    out = Path(config["out_dir"]).resolve()
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    status = "ok" if free >= write_bytes else "problem"
    yield Row("disk", str(out), status, f"{_gb(free)} free; the run writes at most ~{_gb(write_bytes)}")


# ------------------------------------------------------------------------------------------------------------ report


def preflight(configfiles: list[Path]) -> list[Row]:
    """Every check's rows, in order; a check that cannot run is itself a problem row, never an early stop."""
    rows: list[Row] = []
    try:
        config = load_config(configfiles)
    except (OSError, yaml.YAMLError) as err:
        return [Row("config", "files", "problem", str(err))]
    rows += check_config(config)
    if rows[-1].status == "problem":
        return rows
    roots = source_roots(config["source"], config["out_dir"])
    for kind, root in roots.items():
        if root is not None and not root.is_dir():
            rows.append(Row("source", f"source.{kind}_root", "problem", f"{root} is not a directory"))
            roots[kind] = None
    with tempfile.TemporaryDirectory(prefix="hftri-preflight-") as workdir:
        rows += _guarded("source", lambda: check_sources(config, roots, Path(workdir)))
    rows += _guarded("records", lambda: check_record_files(roots, config["out_dir"]))
    rows += _guarded("checkpoint", lambda: check_checkpoints(config))
    rows += _guarded("gpu", lambda: check_gpu(config))
    size: list[tuple[list[Row], int]] = []
    rows += _guarded("run", lambda: size.append(run_size(config, roots)) or [])
    size_rows, write_bytes = size[0] if size else ([], FIXED_OUTPUT_BYTES)
    rows += _guarded("disk", lambda: check_disk(config, write_bytes))
    rows += size_rows
    return rows


def _guarded(area: str, check: Callable[[], object]) -> list[Row]:
    """A check's rows; a check that fails unexpectedly is a problem row of its area, and the others still run."""
    try:
        return list(check())
    except Exception as err:  # preflight reports every problem instead of stopping at the first
        return [
            Row(area, "check", "problem", f"the check itself failed: {type(err).__name__}: {str(err).splitlines()[0]}")
        ]


def render(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal, pasteable into an issue)."""
    lines = ["| area | item | status | detail |", "|---|---|---|---|"]
    lines += [f"| {r.area} | {r.item} | {r.status.upper() if r.status != 'ok' else 'ok'} | {r.detail} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", type=Path, default=[], help="overlays laid over config.yaml")
    args = parser.parse_args(argv)
    rows = preflight(args.configfile)
    print(render(rows))
    problems = [r for r in rows if r.status == "problem"]
    warnings = [r for r in rows if r.status == "warning"]
    print(f"preflight: {len(problems)} problem(s), {len(warnings)} warning(s), {len(rows)} checks")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
