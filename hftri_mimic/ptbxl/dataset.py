"""PTB-XL external validation (paper §5.2, Table 4): myocardial infarction vs normal from patient metadata as
text plus the 12-lead ECG, on the public PTB-XL layout (``ptbxl_database.csv``, ``scp_statements.csv``,
``records500/``) or the demo tree of :mod:`hftri_mimic.demo.ptbxl`.

Labels (:func:`label_records`). A statement of a record's ``scp_codes`` counts when its likelihood is at least
``min_likelihood`` (0 counts every listed statement, as PTB-XL's example code does; 100 only certain ones). The
record's diagnostic superclasses are the ``diagnostic_class`` values of its counted statements that have
``diagnostic == 1`` in ``scp_statements.csv``. Then, in this order, a record is

- excluded ``fold_not_used`` when its ``strat_fold`` is in none of the configured train / val / test folds;
- excluded ``no_diagnostic_statement`` when it has no counted diagnostic statement;
- excluded ``mi_and_norm`` when its superclasses hold both MI and NORM (contradictory annotation);
- **MI** (label 1) when they hold MI (other superclasses such as STTC or CD may accompany it);
- **normal** (label 0) when they are NORM only, or NORM with others when ``norm_only`` is false;
- excluded ``norm_with_other_class`` (NORM plus e.g. a conduction disturbance, with ``norm_only``);
- excluded ``neither_mi_nor_norm`` otherwise (STTC, CD, HYP only).

Records in = kept + excluded, always; the ECG stage (:mod:`hftri_mimic.ecg.stage`, unchanged) then excludes
unreadable or poor-quality recordings with its own named reasons.

The dataset (:func:`build_dataset`) has the HFTri layout (``hftri/manifest.parquet``, ``hftri/text.parquet``,
``hftri/splits.parquet`` under the PTB-XL output folder) so that :mod:`models` trains and predicts on it unchanged:
one row per record (``subject_id`` = ``hadm_id`` = ``ecg_id``; PTB-XL's folds are patient-wise, so no patient
straddles two splits), the label in ``prevalent_hf`` (the column the diagnosis task reads) and ``mi``.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from hftri_mimic.dataset.text import join_sentences, patient_sentences

log = logging.getLogger(__name__)

__all__ = [
    "DATABASE_FILE",
    "LABEL_EXCLUSION_REASONS",
    "REQUIRED_COLUMNS",
    "STATEMENTS_FILE",
    "build_dataset",
    "check_ptbxl_source",
    "diagnostic_classes",
    "label_records",
    "metadata_sentences",
    "read_database",
    "table4_markdown",
]

DATABASE_FILE = "ptbxl_database.csv"
STATEMENTS_FILE = "scp_statements.csv"
REQUIRED_COLUMNS = {
    DATABASE_FILE: [
        "ecg_id",
        "patient_id",
        "age",
        "sex",
        "height",
        "weight",
        "scp_codes",
        "strat_fold",
        "filename_lr",
        "filename_hr",
    ],
    STATEMENTS_FILE: ["diagnostic", "diagnostic_class"],
}
LABEL_EXCLUSION_REASONS = (
    "unreadable_scp_codes",
    "fold_not_used",
    "no_diagnostic_statement",
    "mi_and_norm",
    "norm_with_other_class",
    "neither_mi_nor_norm",
)
AGE_ANONYMISED = 300  # PTB-XL's mark for ages above 89
AGE_ANONYMISED_TEXT = 90  # what the text says for it
SPLITS = ("train", "val", "test")
FILENAME_COLUMN = {"records500": "filename_hr", "records100": "filename_lr"}

RECORD_SCHEMA = {
    "subject_id": pl.Int64,
    "ecg_id": pl.Int64,
    "patient_id": pl.Int64,
    "strat_fold": pl.Int64,
    "split": pl.String,
    "mi": pl.Boolean,
    "superclasses": pl.String,
    "age": pl.Float64,
    "sex": pl.Int64,
    "height": pl.Float64,
    "weight": pl.Float64,
    "ecg_study_id": pl.Int64,
    "ecg_path": pl.String,
}
EXCLUSION_SCHEMA = {
    "ecg_id": pl.Int64,
    "patient_id": pl.Int64,
    "strat_fold": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
}


def check_ptbxl_source(root: Path | str) -> None:
    """A PTB-XL root that lacks a file or column stops the run here, naming what is expected."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"{root} is not a directory (expected the PTB-XL release: {DATABASE_FILE}, {STATEMENTS_FILE}, records500/)"
        )
    for name, columns in REQUIRED_COLUMNS.items():
        path = root / name
        if not path.is_file():
            raise ValueError(f"{path} is missing (expected the PTB-XL release layout)")
        header = pd.read_csv(path, nrows=0, index_col=0 if name == STATEMENTS_FILE else None)
        missing = [c for c in columns if c not in header.columns]
        if missing:
            raise ValueError(f"{path} lacks the PTB-XL columns {missing}")


def read_database(path: Path | str) -> pd.DataFrame:
    """``ptbxl_database.csv`` as the release writes it (one row per record, ecg_id a column)."""
    return pd.read_csv(path)


def diagnostic_classes(path: Path | str) -> dict[str, str]:
    """Statement code -> diagnostic superclass, for the statements with ``diagnostic == 1``."""
    statements = pd.read_csv(path, index_col=0)
    diagnostic = statements[statements["diagnostic"] == 1]
    return {str(code): str(klass) for code, klass in diagnostic["diagnostic_class"].items() if pd.notna(klass)}


def _parse_codes(text: object) -> dict[str, float] | None:
    if not isinstance(text, str):
        return None
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(codes, dict):
        return None
    return {str(k): float(v) for k, v in codes.items()}


def _int_or_none(value: object) -> int | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


def _float_or_none(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def label_records(
    database: Path | str,
    statements: Path | str,
    *,
    min_likelihood: float,
    folds: Mapping[str, Sequence[int]],
    records: str = "records500",
    norm_only: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, excluded): the MI / normal records with their split and metadata, and every other record with
    its reason (see the module docstring). ``folds`` maps train / val / test to ``strat_fold`` values;
    ``records`` chooses the 500 Hz (``filename_hr``) or 100 Hz (``filename_lr``) recordings."""
    if records not in FILENAME_COLUMN:
        raise ValueError(f"records must be one of {sorted(FILENAME_COLUMN)}, got {records!r}")
    split_of: dict[int, str] = {}
    for split in SPLITS:
        for fold in folds[split]:
            if int(fold) in split_of:
                raise ValueError(f"strat_fold {fold} is in both {split_of[int(fold)]} and {split}")
            split_of[int(fold)] = split
    classes = diagnostic_classes(statements)
    frame = read_database(database)
    filename = FILENAME_COLUMN[records]
    kept, excluded = [], []
    for row in frame.itertuples(index=False):
        base = {
            "ecg_id": int(row.ecg_id),
            "patient_id": _int_or_none(row.patient_id),
            "strat_fold": _int_or_none(row.strat_fold),
        }
        codes = _parse_codes(row.scp_codes)
        superclasses = sorted(
            {classes[c] for c, likelihood in (codes or {}).items() if c in classes and likelihood >= min_likelihood}
        )
        reason = None
        if codes is None:
            reason = "unreadable_scp_codes"
        elif base["strat_fold"] not in split_of:
            reason = "fold_not_used"
        elif not superclasses:
            reason = "no_diagnostic_statement"
        elif "MI" in superclasses and "NORM" in superclasses:
            reason = "mi_and_norm"
        elif "MI" not in superclasses and "NORM" in superclasses and len(superclasses) > 1 and norm_only:
            reason = "norm_with_other_class"
        elif "MI" not in superclasses and "NORM" not in superclasses:
            reason = "neither_mi_nor_norm"
        if reason is not None:
            excluded.append({**base, "reason": reason, "detail": ",".join(superclasses)})
            continue
        kept.append(
            {
                **base,
                "subject_id": int(row.ecg_id),
                "split": split_of[base["strat_fold"]],
                "mi": "MI" in superclasses,
                "superclasses": ",".join(superclasses),
                "age": _float_or_none(row.age),
                "sex": _int_or_none(row.sex),
                "height": _float_or_none(row.height),
                "weight": _float_or_none(row.weight),
                "ecg_study_id": int(row.ecg_id),
                "ecg_path": str(getattr(row, filename)),
            }
        )
    kept_frame = pl.DataFrame(kept, schema=RECORD_SCHEMA).sort("subject_id")
    excluded_frame = pl.DataFrame(excluded, schema=EXCLUSION_SCHEMA).sort("ecg_id")
    if kept_frame.height + excluded_frame.height != len(frame):
        raise RuntimeError(
            f"PTB-XL labels: {len(frame)} records in, {kept_frame.height} kept + {excluded_frame.height} excluded"
        )
    counts = excluded_frame.group_by("reason").len().sort("reason").rows()
    log.info(
        "PTB-XL labels (likelihood >= %s): %d records in = %d kept (%d MI, %d normal) + %d excluded (%s)",
        min_likelihood,
        len(frame),
        kept_frame.height,
        int(kept_frame["mi"].sum()),
        int((~kept_frame["mi"]).sum()),
        excluded_frame.height,
        ", ".join(f"{r}: {k}" for r, k in counts) or "none",
    )
    return kept_frame, excluded_frame


def metadata_sentences(row: Mapping[str, object]) -> list[str]:
    """The metadata text of one record in the lab text's template ("<column name> of the <object> is <value>",
    :func:`hftri_mimic.dataset.text.patient_sentences`): age (300, PTB-XL's mark for > 89, reads 90), sex (0 male,
    1 female), height, weight; missing values leave no sentence."""
    age = row.get("age")
    if age is not None and age >= AGE_ANONYMISED:
        age = AGE_ANONYMISED_TEXT
    gender = {0: "M", 1: "F"}.get(row.get("sex"))
    measures = {"height_cm": row.get("height"), "weight_kg": row.get("weight"), "bmi": None}
    return patient_sentences({"age": age, "gender": gender, "race": None, **measures}, [], [], [])


def _attrition(records_in: int, patients_in: int, excluded: pl.DataFrame, final: pl.DataFrame) -> pl.DataFrame:
    """Records and patients left after each exclusion reason, in the order they apply."""
    rows = [
        {
            "reason": "PTB-XL records",
            "n_records": records_in,
            "n_subjects": patients_in,
            "excluded_records": 0,
            "excluded_subjects": 0,
        }
    ]
    remaining_records = records_in
    remaining = set(final["patient_id"].to_list()) | set(excluded["patient_id"].drop_nulls().to_list())
    order = [*LABEL_EXCLUSION_REASONS, *sorted(set(excluded["reason"]) - set(LABEL_EXCLUSION_REASONS))]
    for reason in order:
        gone = excluded.filter(pl.col("reason") == reason)
        if gone.height == 0:
            continue
        remaining_records -= gone.height
        later = excluded.filter(pl.col("reason").is_in(order[order.index(reason) + 1 :]))
        still = set(final["patient_id"].to_list()) | set(later["patient_id"].drop_nulls().to_list())
        lost = len(remaining - still)
        remaining = still
        rows.append(
            {
                "reason": reason,
                "n_records": remaining_records,
                "n_subjects": len(remaining),
                "excluded_records": gone.height,
                "excluded_subjects": lost,
            }
        )
    frame = pl.DataFrame(rows).with_row_index("reason_id").with_columns(pl.col("reason_id").cast(pl.Int64))
    return frame.select("reason_id", "reason", "n_records", "n_subjects", "excluded_records", "excluded_subjects")


def build_dataset(
    records: pl.DataFrame,
    label_exclusions: pl.DataFrame,
    ecg_index: pl.DataFrame,
    ecg_exclusions: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """The PTB-XL dataset in the HFTri layout: ``manifest``, ``labs`` (the metadata values), ``text`` (raw
    metadata text, tokenised later by the shared ``text_tokens`` step), ``splits`` and ``attrition``.
    Records whose ECG the ECG stage excluded leave the dataset (with their reason in the attrition)."""
    ecg = ecg_index.select("ecg_study_id", "zarr_path", "row")
    table = records.join(ecg, on="ecg_study_id", how="inner").sort("subject_id")
    lost = records.join(ecg, on="ecg_study_id", how="anti")
    if lost.height != ecg_exclusions.height:
        raise RuntimeError(
            f"{lost.height} labelled records lack an ECG but the ECG stage excluded {ecg_exclusions.height}"
        )
    n = table.height
    manifest = table.select(
        "subject_id",
        pl.col("ecg_id").alias("hadm_id"),  # PTB-XL has no admissions: one row per record
        "ecg_id",
        "patient_id",
        "strat_fold",
        "split",
        "mi",
        pl.col("mi").alias("prevalent_hf"),  # the diagnosis label the models read (models.training.data.read_labels)
        "superclasses",
        pl.lit(False).alias("has_followup"),
        pl.lit(None, pl.Boolean).alias("incident_hf"),
        pl.lit(None, pl.Float64).alias("followup_days"),
        pl.lit(True).alias("has_lab"),
        pl.lit(True).alias("has_ecg"),
        pl.lit(False).alias("has_echo"),
        pl.lit(0, pl.Int64).alias("n_lab_values"),
        "ecg_study_id",
        pl.col("zarr_path").alias("ecg_zarr"),
        pl.col("row").alias("ecg_row"),
        pl.lit(None, pl.Int64).alias("echo_study_id"),
        pl.lit(None, pl.String).alias("echo_zarr"),
        pl.lit(None, pl.Int64).alias("echo_row"),
        pl.lit(0, pl.Int64).alias("n_views_present"),
    )
    texts = []
    for row in table.select("subject_id", "age", "sex", "height", "weight").iter_rows(named=True):
        sentences = metadata_sentences(row)
        texts.append(
            {
                "subject_id": row["subject_id"],
                "text": join_sentences(sentences),
                "n_sentences": len(sentences),
                "n_lab_values": 0,
            }
        )
    text = pl.DataFrame(
        texts, schema={"subject_id": pl.Int64, "text": pl.String, "n_sentences": pl.Int64, "n_lab_values": pl.Int64}
    )
    manifest = manifest.with_columns(has_lab=pl.Series([t["n_sentences"] > 0 for t in texts], dtype=pl.Boolean))
    labs = table.select(
        "subject_id",
        pl.when(pl.col("age") >= AGE_ANONYMISED).then(AGE_ANONYMISED_TEXT).otherwise(pl.col("age")).alias("age"),
        pl.col("sex").replace_strict({0: "M", 1: "F"}, default=None, return_dtype=pl.String).alias("gender"),
        pl.col("height").alias("height_cm"),
        pl.col("weight").alias("weight_kg"),
    )
    splits = table.select(
        "subject_id",
        pl.lit("diagnosis").alias("task"),
        pl.lit(0, pl.Int64).alias("repeat"),
        pl.lit(0, pl.Int64).alias("fold"),
        "split",
    )
    ecg_excluded = ecg_exclusions.join(
        records.select("ecg_study_id", "ecg_id", "patient_id", "strat_fold"), on="ecg_study_id", how="left"
    ).select("ecg_id", "patient_id", "strat_fold", pl.format("ecg_{}", "reason").alias("reason"), "detail")
    all_excluded = pl.concat([label_exclusions, ecg_excluded.cast(label_exclusions.schema)])
    records_in = records.height + label_exclusions.height
    patients_in = pl.concat([records["patient_id"], label_exclusions["patient_id"]]).drop_nulls().n_unique()
    attrition = _attrition(records_in, patients_in, all_excluded, table)
    log.info(
        "PTB-XL dataset: %d records (%d MI, %d normal; %s), %d excluded by the ECG stage",
        n,
        int(table["mi"].sum()),
        int((~table["mi"]).sum()),
        ", ".join(f"{s} {int((table['split'] == s).sum())}" for s in SPLITS),
        ecg_exclusions.height,
    )
    return {"manifest": manifest, "labs": labs, "text": text, "splits": splits, "attrition": attrition}


# --------------------------------------------------------------------------- Table 4

TABLE4_SUBSETS = {"lab": "Lab", "ecg": "ECG", "lab+ecg": "Lab+ECG"}


def _cell(row: Mapping[str, object] | None) -> str:
    if row is None or row.get("value") is None:
        return "—"
    value, low, high = row["value"], row.get("ci_low"), row.get("ci_high")
    if low is None or high is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({low:.2f}, {high:.2f})"


def table4_markdown(results: pl.DataFrame, manifest: pl.DataFrame, *, source: str, min_likelihood: float) -> str:
    """The paper's Table 4 (TGMM rows) for this run: accuracy and AUC with 95% CIs on the test folds for Lab
    (metadata text), ECG and Lab+ECG, with the record counts per split and label."""
    lookup = {(r["subset"], r["metric"]): r for r in results.iter_rows(named=True)}
    subsets = [s for s in TABLE4_SUBSETS if any(k[0] == s for k in lookup)]
    lines = [
        "# Table 4: myocardial infarction vs normal on PTB-XL",
        "",
        f"Source: {source}. MI / normal from the diagnostic superclasses of statements with likelihood ≥ "
        f"{min_likelihood:g}. TGMM on patient metadata as text (Lab) and the 12-lead ECG; test folds, 95% "
        "percentile-bootstrap CIs. Accuracy uses the threshold most accurate on the validation fold.",
        "",
        "| Metric | Model | " + " | ".join(TABLE4_SUBSETS[s] for s in subsets) + " |",
        "|:--|:--|" + "|".join(":-:" for _ in subsets) + "|",
    ]
    for metric, name in (("accuracy", "ACC"), ("auc", "AUC")):
        lines.append(f"| {name} | TGMM | " + " | ".join(_cell(lookup.get((s, metric))) for s in subsets) + " |")
    lines += ["", "| split | records | MI | normal |", "|:--|--:|--:|--:|"]
    for split in SPLITS:
        part = manifest.filter(pl.col("split") == split)
        lines.append(f"| {split} | {part.height} | {int(part['mi'].sum())} | {int((~part['mi']).sum())} |")
    n_test = {r["subset"]: r["n"] for r in results.iter_rows(named=True)}
    if n_test:
        lines += ["", f"Test records evaluated per subset: {', '.join(f'{s} {n_test[s]}' for s in subsets)}."]
    return "\n".join(lines) + "\n"
