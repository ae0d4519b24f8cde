"""ECG and echo trees written for the patients and admissions of a real MIMIC-IV hosp folder (the open MIMIC-IV demo:
100 real patients, 275 real admissions), so that a `kind: mimic` run has real hospital tables and signal records
placed as MIMIC-IV-ECG and MIMIC-IV-ECHO place them: ECGs during stays, emergency-department ECGs before
`admittime` (after the ED registration), outpatient ECGs, cart clock offsets, echo studies during stays and as
outpatients, stills and several DICOM kinds. The records are drawn by the demo generator's own functions
(``hftri_mimic.demo.records``), over the real admissions instead of synthetic ones; signal content follows the
patient's heart-failure codes partially (the demo's planted-signal shapes).

    python -m hftri_mimic.demo.real_shaped ../shared/data/mimic-iv-demo-2.2/hosp results/real_shaped

writes ``<out>/source/{ecg,echo}/`` (the PhysioNet layouts) and ``<out>/truth/`` (what the records were drawn from).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from hftri_mimic.demo import records
from hftri_mimic.demo.generate import CsvGzAppender, DemoSpec, write_signal_files
from hftri_mimic.demo.population import CARDIAC, POST, PopulationChunk

# ICD prefixes of heart failure the signal components follow (the strict definition's main codes).
HF_PREFIXES = ("428", "I50")


def real_population(hosp_root: Path, rng: np.random.Generator) -> PopulationChunk:
    """The real patients and admissions as the demo generator's population: each patient's first admission is its
    cardiac stay (where most ECGs and echo studies are drawn), later ones follow-up stays; the ECG and echo
    components are larger for patients with a heart-failure code, with noise (partial signal)."""
    patients = pl.read_csv(hosp_root / "patients.csv.gz").select("subject_id").sort("subject_id")
    admissions = (
        pl.read_csv(hosp_root / "admissions.csv.gz", try_parse_dates=True)
        .select("subject_id", "hadm_id", "admittime", "dischtime", "edregtime")
        .sort("subject_id", "admittime", "hadm_id")
    )
    diagnoses = pl.read_csv(hosp_root / "diagnoses_icd.csv.gz", schema_overrides={"icd_code": pl.String})
    with_hf = set(
        diagnoses.filter(pl.col("icd_code").str.strip_chars().str.starts_with(HF_PREFIXES[0])
                         | pl.col("icd_code").str.strip_chars().str.starts_with(HF_PREFIXES[1]))["subject_id"]
    )  # fmt: skip
    hf = patients["subject_id"].is_in(list(with_hf)).to_numpy().astype(float)
    n = patients.height
    patients = patients.with_columns(
        _c_ecg=pl.Series(1.2 * hf + rng.normal(0, 1.0, n)),
        _c_echo=pl.Series(1.2 * hf + rng.normal(0, 1.0, n)),
    )
    index_of = {s: i for i, s in enumerate(patients["subject_id"].to_list())}
    first = admissions["subject_id"].is_first_distinct().to_numpy()
    admissions = admissions.with_columns(
        _pidx=admissions["subject_id"].replace_strict(index_of, return_dtype=pl.Int64),
        _role=pl.Series(np.where(first, CARDIAC, POST)),
        **{c: pl.col(c).cast(pl.Datetime("ms")) for c in ("admittime", "dischtime", "edregtime")},
    )
    return PopulationChunk(patients=patients, admissions=admissions)


def write_real_shaped_signals(
    hosp_root: Path | str, out: Path | str, spec: DemoSpec | None = None, workers: int = 1
) -> dict[str, int]:
    """Write ``out/source/ecg``, ``out/source/echo`` and ``out/truth`` for the hosp tables in ``hosp_root``; return
    the record counts."""
    hosp_root, out = Path(hosp_root), Path(out)
    spec = spec or DemoSpec(seed=20253, echo_height=64, echo_width=80, echo_frames=(6, 12))
    rng = np.random.default_rng([spec.seed, 0])
    pop = real_population(hosp_root, rng)
    source, truth = out / "source", out / "truth"
    truth.mkdir(parents=True, exist_ok=True)

    ecgs = records.ecg_records(rng, pop, spec.ecg_fraction, 40_000_000, 50_000_000)
    measurements = records.machine_measurements(rng, ecgs)
    ecgs, measurements = records.apply_clock_offsets(ecgs, measurements, records.cart_clock_offsets(spec.seed))
    studies = records.echo_studies(rng, pop, spec.echo_fraction, 90_000_000, 100_000_000)
    dicoms = records.echo_dicoms(rng, studies, spec.echo_frames, np.random.default_rng([spec.seed, 5]))
    for path, frame in (
        (source / "ecg/record_list.csv", ecgs.select(records.ECG_RECORD_LIST_COLUMNS)),
        (source / "ecg/machine_measurements.csv", measurements),
        (source / "echo/echo-study-list.csv", studies.select(records.ECHO_STUDY_LIST_COLUMNS)),
        (source / "echo/echo-record-list.csv", dicoms.select(records.ECHO_RECORD_LIST_COLUMNS)),
    ):
        appender = CsvGzAppender(path)
        appender.write(frame)
        appender.close()
    ecg_truth = ecgs.rename(lambda c: c.lstrip("_"))
    dicom_truth = dicoms.rename(lambda c: c.lstrip("_"))
    ecg_truth.write_parquet(truth / "ecg_records.parquet")
    dicom_truth.write_parquet(truth / "echo_dicoms.parquet")
    write_signal_files(source, ecg_truth, dicom_truth, spec, workers)
    return {"patients": pop.patients.height, "admissions": pop.admissions.height, "ecg_records": ecgs.height,
            "echo_studies": studies.height, "echo_dicoms": dicoms.height}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hosp_root", type=Path, help="a MIMIC-IV hosp folder (patients, admissions, diagnoses_icd)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    counts = write_real_shaped_signals(args.hosp_root, args.out, workers=args.workers)
    print("real-shaped signals: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
