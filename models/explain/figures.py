"""The explanation figures and the lab-text HTML page; patients are numbered 1, 2, ..., never named by id."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from models.config import MODALITIES, SLOTS
from models.explain.ecg import WAVES

# --------------------------------------------------------------------------- figures and files


def attention_figure(frame: pl.DataFrame, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = frame.filter(task=task)
    labels = sorted(part["label"].unique().to_list())
    shared = [s for s in SLOTS if "+" in s]
    fig, axes = plt.subplots(len(labels), 1 + len(shared), figsize=(16, 3.6 * len(labels)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.4] + [1] * len(shared)})  # fmt: skip
    names = {"diagnosis": ("no prevalent HF", "prevalent HF"), "prognosis": ("no incident HF", "incident HF")}[task]
    for r, label in enumerate(labels):
        tgm = part.filter(label=label, module="tgm")
        keys = [*SLOTS, "prompt"]
        matrix = np.array([[tgm.filter(query=q, key=k)["weight"][0] for k in keys] for q in SLOTS])
        ax = axes[r, 0]
        ax.imshow(matrix, cmap="Reds", vmin=0)
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right")
        ax.set_yticks(range(len(SLOTS)), SLOTS)
        ax.set_title(f"TGM, {names[label]} (n={tgm['n'][0]})")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        for c, slot in enumerate(shared, start=1):
            m = part.filter(label=label, module="mffm", slot=slot)
            matrix = np.array([[m.filter(query=q, key=k)["weight"][0] for k in MODALITIES] for q in MODALITIES])
            ax = axes[r, c]
            ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(3), MODALITIES)
            ax.set_yticks(range(3), MODALITIES)
            ax.set_title(f"MFFM {slot}")
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.suptitle(f"Attention over specific and shared features (trimodal {task}; t = lab, s = ECG, m = echo)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colour(value: float, scale: float) -> str:
    alpha = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    rgb = "220,40,40" if value > 0 else "40,90,220"
    return f"rgba({rgb},{alpha:.3f})"


def text_html(tokens: pl.DataFrame) -> str:
    """An HTML page: every patient's lab text as WordPiece tokens on a red (towards the positive answer) / blue
    (away from it) background, intensity ∝ |attribution| / the patient's largest |attribution|."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Lab-text token attributions</title>",
        "<style>body{font-family:sans-serif;max-width:1100px}span.t{padding:1px 2px;margin:0 1px;"
        "border-radius:3px;line-height:1.9}</style></head><body>",
        "<h1>Lab-text token attributions (integrated gradients)</h1>",
        "<p>Red: pushes towards the positive answer (heart failure / high risk); blue: away from it.</p>",
    ]
    for k, ((task, _), part) in enumerate(tokens.group_by(["task", "subject_id"], maintain_order=True), start=1):
        scale = float(part["attribution"].abs().max())
        label, score = int(part["label"][0]), float(part["score"][0])
        parts.append(f"<h2>{html.escape(task)}: patient {k} (class {label}, score {score:.3f})</h2><p>")
        for token, value in zip(part["token"], part["attribution"], strict=True):
            text = html.escape(token[2:] if token.startswith("##") else token)
            parts.append(
                f"<span class='t' title='{value:.4g}' style='background:{_colour(value, scale)}'>{text}</span>"
            )
        parts.append("</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def text_figure(tokens: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(tokens.filter(pl.col("sentence") >= 0).group_by(["task", "subject_id"], maintain_order=True))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 3.2 * max(len(groups), 1)), squeeze=False)
    for k, (ax, ((task, _), part)) in enumerate(zip(axes[:, 0], groups, strict=True), start=1):
        sentences = part.group_by("sentence", maintain_order=True).agg(
            pl.col("sentence_label").first(), pl.col("attribution").sum()
        )
        values = sentences["attribution"].to_numpy()
        ax.barh(range(len(values)), values, color=np.where(values > 0, "tab:red", "tab:blue"))
        ax.set_yticks(range(len(values)), sentences["sentence_label"].to_list(), fontsize=6)
        ax.invert_yaxis()
        ax.set_title(f"{task}: patient {k} (class {part['label'][0]}), attribution per sentence", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ecg_figure(frame: pl.DataFrame, ecgs: Mapping[int, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hftri_mimic.ecg.signal import ST_MEM_LEADS

    groups = list(frame.group_by(["task", "subject_id"], maintain_order=True))
    fig, axes = plt.subplots(len(groups), 1, figsize=(12, 4.2 * len(groups)), squeeze=False)
    for k, (ax, ((task, subject), part)) in enumerate(zip(axes[:, 0], groups, strict=True), start=1):
        cam = np.stack(part.sort("lead_index")["cam"].to_list())  # (12, T)
        cam = cam / max(float(cam.max()), 1e-12)
        signal = ecgs[subject]
        t = np.arange(signal.shape[1])
        ax.imshow(cam, aspect="auto", cmap="Reds", extent=(0, len(t), len(ST_MEM_LEADS), 0), vmin=0, vmax=1)
        for lead in range(len(ST_MEM_LEADS)):
            trace = signal[lead] / (np.abs(signal[lead]).max() + 1e-6)
            ax.plot(t, lead + 0.5 - 0.45 * trace, color="black", linewidth=0.4)
        ax.set_yticks(np.arange(len(ST_MEM_LEADS)) + 0.5, ST_MEM_LEADS, fontsize=7)
        ax.set_xlabel("sample (250 Hz)")
        ax.set_title(f"{task}: patient {k} (class {part['label'][0]}), ECG Grad-CAM++", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def occlusion_figure(frame: pl.DataFrame, ecgs: Mapping[int, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(frame.iter_rows(named=True))
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 2.2 * len(rows)), squeeze=False)
    for k, (ax, row) in enumerate(zip(axes[:, 0], rows, strict=True), start=1):
        values = np.asarray(row["attribution"], dtype=np.float64)
        signal = ecgs[row["subject_id"]][1]  # lead II
        t = np.arange(values.size)
        scale = max(float(np.abs(values).max()), 1e-12)
        ax.fill_between(t, 0, values / scale, where=values > 0, color="tab:red", alpha=0.5, linewidth=0)
        ax.fill_between(t, 0, values / scale, where=values < 0, color="tab:blue", alpha=0.5, linewidth=0)
        ax.plot(t, signal / (np.abs(signal).max() + 1e-6), color="black", linewidth=0.5)
        ax.set_xlim(0, values.size)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([])
        ax.set_title(
            f"{row['task']}: patient {k} (class {row['label']}, score {row['score']:.3f}), occlusion over time "
            f"(largest |attribution| {scale:.3g})",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel("sample (250 Hz); black: lead II")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def waves_figure(frame: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = frame["task"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = frame.filter(task=task).drop_nans("attribution")
        for offset, (label, colour) in zip((-0.18, 0.18), ((0, "tab:blue"), (1, "tab:red")), strict=True):
            for k, wave in enumerate(WAVES):
                values = rows.filter(label=label, wave=wave)["attribution"].to_numpy()
                if values.size == 0:
                    continue
                ax.bar(k + offset, values.mean(), width=0.34, color=colour, alpha=0.45)
                ax.scatter(np.full(values.size, k + offset), values, s=10, color=colour)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(WAVES)), [f"{wave} erased" for wave in WAVES])
        ax.set_ylabel("score - score without the wave")
        ax.set_title(f"{task}: blue class 0, red class 1 (bar: mean, dots: patients)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def echo_figure(frame: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hftri_mimic.echo.dicom import VIEWS

    groups = list(frame.group_by(["task", "subject_id"], maintain_order=True))
    cols = min(len(groups), 4)
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    for k, (ax, ((task, _), part)) in enumerate(zip(axes.flat[: len(groups)], groups, strict=True), start=1):
        cam = np.stack(part.sort("view_index")["cam"].to_list())  # (11, F)
        ax.imshow(cam / max(float(cam.max()), 1e-12), aspect="auto", cmap="Reds", vmin=0, vmax=1)
        ax.set_yticks(range(len(VIEWS)), VIEWS, fontsize=6)
        ax.set_xlabel("frame")
        ax.set_title(f"{task} patient {k} (class {part['label'][0]})", fontsize=8)
    fig.suptitle("Echo Grad-CAM++ over views x frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def empty_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5, 1))
    fig.text(0.5, 0.5, "no test patient with lab text, ECG and echo", ha="center", va="center")
    fig.savefig(path, dpi=80)
    plt.close(fig)
