"""The final HFTri-MIMIC dataset (docs/CURATION.md, Dataset): the manifest that ties each patient's labels, times,
lab text and signal locations together, and the datasheet that describes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from hftri_mimic.cohort.concepts import COHORT_COLUMNS
from hftri_mimic.common.storage import write_parquet_atomic
from hftri_mimic.echo.dicom import VIEWS

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    *COHORT_COLUMNS[:11],  # ids, times, demographics, labels
    "has_lab",
    "has_ecg",
    "has_echo",
    "n_lab_values",
    "ecg_study_id",
    "ecg_time",
    "ecg_zarr",
    "ecg_row",
    "ecg_signal_sha256",
    "echo_study_id",
    "echo_time",
    "echo_zarr",
    "echo_row",
    "echo_clips_sha256",
    "n_views_present",
    "views_present",
]
# Training views (train/data/): what the encoders read of each patient (no labels, each array's digest), and per
# task the split rows with that task's label columns only.
INPUT_COLUMNS = [
    "subject_id",
    "has_lab",
    "has_ecg",
    "has_echo",
    "ecg_zarr",
    "ecg_row",
    "ecg_signal_sha256",
    "echo_zarr",
    "echo_row",
    "echo_clips_sha256",
    "n_views_present",
]
TASK_LABEL_COLUMNS = {
    "diagnosis": ["prevalent_hf"],
    "prognosis": ["prevalent_hf", "has_followup", "incident_hf", "followup_days"],
}


def assemble_manifest(
    cohort: Path | str,
    lab_values: Path | str,
    out: Path | str,
    required: list[str],
    ecg_index: Path | str | None = None,
    echo_index: Path | str | None = None,
) -> pl.DataFrame:
    """One row per patient after all exclusions: a patient whose required ECG or echo study was excluded
    by its stage is dropped (as the attrition table says); a modality that is not required may be absent
    (``has_*`` false, locations null)."""
    patients = pl.read_parquet(cohort)
    n_labs = pl.read_parquet(lab_values).group_by("subject_id").agg(pl.len().cast(pl.Int64).alias("n_lab_values"))
    manifest = (
        patients.join(n_labs, on="subject_id", how="left")
        .with_columns(n_lab_values=pl.col("n_lab_values").fill_null(0))
        .with_columns(has_lab=pl.col("n_lab_values") > 0)
    )
    if ecg_index is not None:
        ecg = pl.read_parquet(ecg_index).select(
            "subject_id",
            pl.col("zarr_path").alias("ecg_zarr"),
            pl.col("row").alias("ecg_row"),
            pl.col("signal_sha256").alias("ecg_signal_sha256"),
        )
        manifest = manifest.join(ecg, on="subject_id", how="left")
    else:
        manifest = manifest.with_columns(
            ecg_zarr=pl.lit(None, pl.String), ecg_row=pl.lit(None, pl.Int64), ecg_signal_sha256=pl.lit(None, pl.String)
        )
    if echo_index is not None:
        echo = pl.read_parquet(echo_index).select(
            "subject_id",
            pl.col("zarr_path").alias("echo_zarr"),
            pl.col("row").alias("echo_row"),
            pl.col("clips_sha256").alias("echo_clips_sha256"),
            "n_views_present",
            "views_present",
        )
        manifest = manifest.join(echo, on="subject_id", how="left")
    else:
        manifest = manifest.with_columns(
            echo_zarr=pl.lit(None, pl.String),
            echo_row=pl.lit(None, pl.Int64),
            echo_clips_sha256=pl.lit(None, pl.String),
            n_views_present=pl.lit(None, pl.Int64),
            views_present=pl.lit(None, pl.List(pl.String)),
        )
    manifest = manifest.with_columns(
        has_ecg=pl.col("ecg_zarr").is_not_null(), has_echo=pl.col("echo_zarr").is_not_null()
    )
    keep = pl.lit(True)
    for modality in ("ecg", "echo"):  # the lab modality was required by the cohort itself
        if modality in required:
            keep = keep & pl.col(f"has_{modality}")
    dropped = manifest.filter(~keep).height
    _check_modalities_left(manifest, keep, required, [m for m, i in (("ecg", ecg_index), ("echo", echo_index)) if i])
    manifest = manifest.filter(keep).select(MANIFEST_COLUMNS).sort("subject_id")
    write_parquet_atomic(manifest, out)
    log.info(
        "manifest: %d patients (%d dropped by ECG/echo exclusions); %d prevalent HF, %d with follow-up",
        manifest.height,
        dropped,
        int(manifest["prevalent_hf"].sum()),
        int(manifest["has_followup"].sum()),
    )
    return manifest


def _check_modalities_left(manifest: pl.DataFrame, keep: pl.Expr, required: list[str], staged: list[str]) -> None:
    """No patient left, or a required signal modality with no usable record: an error naming the stage. A modality
    that is not required and has no usable record is logged (its subsets would train on nothing)."""
    cohort_size = manifest.height
    for modality in staged:  # the modalities whose stage ran (the source has them)
        usable = int(manifest[f"has_{modality}"].sum())
        if usable == 0 and modality in required:
            raise RuntimeError(
                f"no usable {modality} record is left: the {modality} stage excluded the record of every one of the "
                f"{cohort_size} cohort patients (see {modality}/exclusions.parquet and its reasons), and "
                f"cohort.require_modalities has {modality!r}: the dataset would be empty"
            )
        if usable == 0:
            log.warning("no patient has a usable %s record: its subsets have nothing to learn from", modality)
    if manifest.filter(keep).height == 0:
        raise RuntimeError(
            f"no patient is left: each of the {cohort_size} cohort patients lost a required record "
            f"({', '.join(m for m in required if m != 'lab')}) in the ECG/echo stages; see their exclusions.parquet"
        )


def write_training_views(
    manifest: Path | str, splits: Path | str, inputs_out: Path | str, task_out: dict[str, Path | str]
) -> None:
    """The tables the training jobs read instead of the manifest and the splits (docs/RUNNING.md, "Changing a
    criterion"): ``inputs_out`` (INPUT_COLUMNS: no labels, so a label criterion never re-encodes) and, for each
    task of ``task_out``, that task's split rows with its label columns only (TASK_LABEL_COLUMNS), so that a
    follow-up criterion leaves the diagnosis view unchanged and retrains no diagnosis model."""
    patients = pl.read_parquet(manifest)
    write_parquet_atomic(patients.select(INPUT_COLUMNS).sort("subject_id"), inputs_out)
    split_rows = pl.read_parquet(splits)
    for task, out in task_out.items():
        view = (
            split_rows.filter(pl.col("task") == task)
            .join(patients.select("subject_id", *TASK_LABEL_COLUMNS[task]), on="subject_id", how="left")
            .sort("repeat", "fold", "subject_id")
        )
        write_parquet_atomic(view, out)
        log.info("training view %s: %d rows, %d patients", task, view.height, view["subject_id"].n_unique())


def _bar(ax, names, values, title, ylabel="%"):
    ax.bar(range(len(values)), values, color="#4C72B0")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def _percent(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)" if total else "0"


def table_one(manifest: pl.DataFrame, labs: pl.DataFrame) -> list[list[str]]:
    """Table 1-style counts by diagnosis group and, in the prognosis subset, by incident HF."""
    data = manifest.join(labs.drop("age", "gender", "race"), on="subject_id", how="left")
    groups = {
        "All": data,
        "Prevalent HF": data.filter("prevalent_hf"),
        "Non-prevalent HF": data.filter(~pl.col("prevalent_hf")),
        "Incident HF": data.filter(pl.col("incident_hf").fill_null(False)),
        "No incident HF": data.filter(pl.col("has_followup") & ~pl.col("incident_hf").fill_null(True)),
    }
    rows = [["", *groups]]
    rows.append(["Patients", *[str(g.height) for g in groups.values()]])
    rows.append(
        [
            "Age, mean (sd)",
            *[f"{g['age'].mean():.1f} ({g['age'].std():.1f})" if g.height > 1 else "-" for g in groups.values()],
        ]
    )
    rows.append(["Female", *[_percent(int((g["gender"] == "F").sum()), g.height) for g in groups.values()]])
    for column in [c for c in labs.columns if c.startswith("history_")]:
        rows.append(
            [
                column.removeprefix("history_").replace("_", " ").capitalize(),
                *[_percent(int(g[column].sum()), g.height) for g in groups.values()],
            ]
        )
    return rows


def plot_attrition_flow(attrition: pl.DataFrame, path: Path | str) -> Path:
    """The attrition flow diagram: one box per step with the admissions and patients left, and beside each arrow
    what that step excluded (``attrition``: the cohort/dataset attrition table, one row per step in order)."""
    rows = attrition.sort("reason_id").to_dicts()
    height = 0.9 * len(rows) + 0.4
    fig, ax = plt.subplots(figsize=(10, height))
    ax.set_xlim(0, 10)
    ax.set_ylim(-height + 0.2, 0.6)
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.35", "facecolor": "#e8f0fb", "edgecolor": "#34609b"}
    excluded = {"boxstyle": "round,pad=0.3", "facecolor": "#fbe9e7", "edgecolor": "#b0413e"}
    for i, row in enumerate(rows):
        y = -0.9 * i
        kept = f"{row['n_records']:,} admissions / {row['n_subjects']:,} patients"
        title = row["reason"] if i == 0 else "remaining"
        ax.text(2.8, y, f"{title}\n{kept}", ha="center", va="center", fontsize=8, bbox=box)
        if i:
            ax.annotate("", xy=(2.8, y + 0.22), xytext=(2.8, y + 0.68), arrowprops={"arrowstyle": "->", "lw": 1.2})
            note = (
                f"excluded: {row['reason']}\n{row['excluded_records']:,} admissions / "
                f"{row['excluded_subjects']:,} patients"
            )
            ax.text(5.4, y + 0.45, note, ha="left", va="center", fontsize=7.5, bbox=excluded)
    ax.set_title("Attrition: from the source admissions to the dataset", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _window_section(windows: dict[str, Path | str]) -> list[str]:
    """Where the ECG records and echo studies fall against the admission windows (cohort.<modality>_window)."""
    if not windows:
        return []
    lines = [
        "## Records and the admission windows",
        "",
        "Every record of the ECG record list and echo study list, by where it falls against its patient's admission "
        "windows (config `cohort.ecg_window`, `cohort.echo_window`); only records inside a window can be chosen.",
        "",
        "| modality | place | records | patients | meaning |",
        "|---|---|---|---|---|",
    ]
    for modality, path in windows.items():
        for place, n_records, n_subjects, meaning in pl.read_parquet(path).rows():
            lines.append(f"| {modality} | {place} | {n_records} | {n_subjects} | {meaning} |")
    return [*lines, ""]


def write_datasheet(
    manifest: Path | str,
    labs: Path | str,
    texts: Path | str,
    attrition: Path | str,
    splits: Path | str,
    out: Path | str,
    figures_dir: Path | str,
    echo_dicoms: Path | str | None = None,
    windows: dict[str, Path | str] | None = None,
) -> None:
    """DATASHEET.md with Fig. 1-style statistics, PNG plots and a Table 1-style count table; ``windows``: modality ->
    where its records fall against the admission windows (cohort/<modality>_window.parquet)."""
    manifest_df, labs_df = pl.read_parquet(manifest), pl.read_parquet(labs)
    texts_df, attrition_df, splits_df = pl.read_parquet(texts), pl.read_parquet(attrition), pl.read_parquet(splits)
    labs_df = labs_df.filter(pl.col("subject_id").is_in(manifest_df["subject_id"].to_list()))
    texts_df = texts_df.filter(pl.col("subject_id").is_in(manifest_df["subject_id"].to_list()))
    figures = Path(figures_dir)
    figures.mkdir(parents=True, exist_ok=True)
    n = manifest_df.height

    plot_attrition_flow(attrition_df, figures / "attrition_flow.png")

    value_columns = [
        c
        for c in labs_df.columns
        if c not in ("subject_id", "gender", "race") and not c.startswith(("history_", "drug_"))
    ]
    rates = [100 * labs_df[c].is_not_null().sum() / max(n, 1) for c in value_columns]
    fig, ax = plt.subplots(figsize=(10, 4))
    _bar(ax, value_columns, rates, "Non-missing rate per field")
    fig.tight_layout()
    fig.savefig(figures / "non_missing_rate.png", dpi=100)
    plt.close(fig)

    history_columns = [c for c in labs_df.columns if c.startswith("history_")]
    joined = labs_df.join(manifest_df.select("subject_id", "prevalent_hf"), on="subject_id")
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.4
    for offset, (label, flag) in enumerate((("prevalent HF", True), ("non-prevalent HF", False))):
        group = joined.filter(pl.col("prevalent_hf") == flag)
        values = [100 * group[c].sum() / max(group.height, 1) for c in history_columns]
        ax.bar([i + offset * width for i in range(len(values))], values, width=width, label=label)
    ax.set_xticks([i + width / 2 for i in range(len(history_columns))])
    ax.set_xticklabels([c.removeprefix("history_") for c in history_columns], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("Medical history by diagnosis group")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figures / "history_by_cohort.png", dpi=100)
    plt.close(fig)

    view_lines = []
    if manifest_df["views_present"].drop_nulls().len():
        exploded = manifest_df.select(pl.col("views_present").drop_nulls()).explode("views_present")
        counts = dict(exploded.group_by("views_present").len().rows())
        view_rates = [100 * counts.get(v, 0) / max(n, 1) for v in VIEWS]
        fig, ax = plt.subplots(figsize=(9, 4))
        _bar(ax, list(VIEWS), view_rates, "Studies with each view")
        fig.tight_layout()
        fig.savefig(figures / "views_present.png", dpi=100)
        plt.close(fig)
        view_lines = [f"| {v} | {counts.get(v, 0)} | {r:.1f}% |" for v, r in zip(VIEWS, view_rates, strict=True)]
    if echo_dicoms is not None:
        used = pl.read_parquet(echo_dicoms).filter(
            pl.col("status") == "used",
            pl.col("echo_study_id").is_in(manifest_df["echo_study_id"].drop_nulls().to_list()),
        )
        data = [used.filter(pl.col("predicted_view") == v)["n_frames"].to_list() for v in VIEWS]
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.boxplot([d if d else [0] for d in data], tick_labels=list(VIEWS))
        ax.tick_params(axis="x", rotation=60, labelsize=8)
        ax.set_title("Frames per cine of the kept clip, by view")
        ax.set_ylabel("frames")
        fig.tight_layout()
        fig.savefig(figures / "frames_per_view.png", dpi=100)
        plt.close(fig)

    t1 = table_one(manifest_df, labs_df)
    lines = [
        "# HFTri-MIMIC datasheet",
        "",
        "Written by the `datasheet` rule from this run's outputs; every number below is computed, none typed.",
        "",
        "## Composition",
        "",
        f"- Patients: {n}; prevalent heart failure: {int(manifest_df['prevalent_hf'].sum())}; "
        f"non-prevalent: {n - int(manifest_df['prevalent_hf'].sum())}.",
        f"- Prognosis subset (follow-up): {int(manifest_df['has_followup'].sum())}; incident HF: "
        f"{int(manifest_df['incident_hf'].fill_null(False).sum())}.",
        f"- Modalities: labs {int(manifest_df['has_lab'].sum())}, ECG {int(manifest_df['has_ecg'].sum())}, "
        f"echo {int(manifest_df['has_echo'].sum())}.",
        f"- Lab text tokens: median {int(texts_df['n_tokens'].median() or 0)}, "
        f"max {int(texts_df['n_tokens'].max() or 0)}; truncated texts: {int(texts_df['truncated'].sum())}.",
        "",
        "## Table 1",
        "",
        "| " + " | ".join(t1[0]) + " |",
        "|" + "---|" * len(t1[0]),
        *["| " + " | ".join(row) + " |" for row in t1[1:]],
        "",
        "## Attrition",
        "",
        "| step | reason | admissions/records | patients | excluded records | excluded patients |",
        "|---|---|---|---|---|---|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |" for r in attrition_df.sort("reason_id").rows()],
        "",
        *_window_section(windows or {}),
        "## Splits",
        "",
        "| task | split | patients (repeat 0, fold 0) |",
        "|---|---|---|",
        *[
            f"| {t} | {s} | {c} |"
            for t, s, c in splits_df.filter((pl.col("repeat") == 0) & (pl.col("fold") == 0))
            .group_by("task", "split")
            .len()
            .sort("task", "split")
            .rows()
        ],
        "",
        "## Figures",
        "",
        "![Non-missing rate per field](figures/non_missing_rate.png)",
        "![Medical history by diagnosis group](figures/history_by_cohort.png)",
    ]
    if view_lines:
        lines += [
            "![Views present](figures/views_present.png)",
            "",
            "| view | studies | share |",
            "|---|---|---|",
            *view_lines,
        ]
    if echo_dicoms is not None:
        lines += ["", "![Frames per view](figures/frames_per_view.png)"]
    Path(out).write_text("\n".join(lines) + "\n")
    log.info("datasheet written with %d figures", len(list(figures.glob("*.png"))))
