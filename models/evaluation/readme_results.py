"""The README's result numbers, written from a run's evaluation tables, never typed.

    python -m models.evaluation.readme_results results            # print the block
    python -m models.evaluation.readme_results results --write README.md

reads ``{results}/eval/{diagnosis,prognosis,retrieval}.parquet`` (block ``results``) and
``{results}/ptbxl/eval/diagnosis.parquet`` (block ``ptbxl``), each with the ``environment.json`` beside it (the lock
the run was made with), and replaces the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in the
README for each block whose tables exist.
A run whose installed packages differed from the lock is refused: its numbers are not reproducible from the lock.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

UNIMODAL_FIRST = ("lab", "ecg", "echo", "lab+ecg", "lab+echo", "ecg+echo", "lab+ecg+echo")


def _subsets(frame: pl.DataFrame) -> list[str]:
    present = frame["subset"].unique().to_list()
    return [s for s in UNIMODAL_FIRST if s in present] + sorted(s for s in present if s not in UNIMODAL_FIRST)


def _row(frame: pl.DataFrame | None, subset: str, metric: str) -> dict | None:
    rows = [] if frame is None else frame.filter(subset=subset, metric=metric).to_dicts()
    return rows[0] if rows else None


def _with_ci(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["ci_low"] is None:
        return f"{row['value']:.3f}"
    return f"{row['value']:.3f} ({row['ci_low']:.2f}–{row['ci_high']:.2f})"


def _with_sd(row: dict | None) -> str:
    if row is None:
        return "–"
    return f"{row['value']:.3f}" if row["sd"] is None else f"{row['value']:.3f} ± {row['sd']:.3f}"


def _provenance(eval_dir: Path, *, allow_unlocked: bool) -> str:
    """'written by … from …, made with <lock>: Python …, packages …' from the run's environment.json."""
    path = eval_dir / "environment.json"
    environment = json.loads(path.read_text())
    if not environment["matches_lock"] and not allow_unlocked:
        raise SystemExit(
            f"{path}: the run's packages differ from the lock ({sorted(environment['differences'])[:5]}); "
            "rerun in an environment installed from the lock"
        )
    packages = ", ".join(f"{name} {version}" for name, version in environment["packages"].items() if version)
    lock = (
        f"`envs/{environment['lock']}` (SHA-256 `{environment['lock_sha256'][:12]}…`)"
        if environment["matches_lock"]
        else "**an environment that differs from the lock**"
    )
    python = ".".join(environment["python"].split(".")[:2])  # the patch release moves no number
    kernels = environment.get("cpu_capability") or "unknown"
    return f"made with {lock}: Python {python}, {packages}; CPU kernels {kernels}"


def _written_by(table: str, eval_dir: Path, *, allow_unlocked: bool) -> str:
    provenance = _provenance(eval_dir, allow_unlocked=allow_unlocked)
    return f"Written by `python -m models.evaluation.readme_results` from the run's `{table}`, {provenance}."


def results_block(results: Path, *, allow_unlocked: bool = False) -> str:
    """Tables 2-3 in short: diagnosis and prognosis per modality subset, retrieval LRAP per direction."""
    eval_dir = results / "eval"
    diagnosis = pl.read_parquet(eval_dir / "diagnosis.parquet")
    prognosis_path = eval_dir / "prognosis.parquet"
    prognosis = pl.read_parquet(prognosis_path) if prognosis_path.exists() else None
    lines = [
        "| modalities | diagnosis AUC (95% CI) | diagnosis accuracy (95% CI) | prognosis C-index (mean ± sd) |",
        "|---|---|---|---|",
    ]
    for subset in _subsets(diagnosis):
        lines.append(
            f"| {subset} | {_with_ci(_row(diagnosis, subset, 'auc'))} | "
            f"{_with_ci(_row(diagnosis, subset, 'accuracy'))} | {_with_sd(_row(prognosis, subset, 'c_index'))} |"
        )
    retrieval_path = eval_dir / "retrieval.parquet"
    if retrieval_path.exists():
        lrap = pl.read_parquet(retrieval_path).filter(metric="lrap").sort("subset")
        directions = ", ".join(f"{row['subset']} {row['value']:.3f}" for row in lrap.to_dicts())
        lines += ["", f"Retrieval LRAP: {directions}."]
    n_test = diagnosis.filter(metric="auc")["n"].max()
    lines += [
        "",
        f"Diagnosis on the {n_test} test patients. "
        + _written_by("eval/*.parquet", eval_dir, allow_unlocked=allow_unlocked),
    ]
    return "\n".join(lines)


def ptbxl_block(results: Path, *, allow_unlocked: bool = False) -> str:
    """Table 4 in short: accuracy and AUC per subset on PTB-XL's test folds."""
    eval_dir = results / "ptbxl/eval"
    diagnosis = pl.read_parquet(eval_dir / "diagnosis.parquet")
    lines = ["| modalities | AUC (95% CI) | accuracy (95% CI) |", "|---|---|---|"]
    for subset in _subsets(diagnosis):
        auc, accuracy = _row(diagnosis, subset, "auc"), _row(diagnosis, subset, "accuracy")
        lines.append(f"| {subset} | {_with_ci(auc)} | {_with_ci(accuracy)} |")
    n_test = diagnosis.filter(metric="auc")["n"].max()
    lines += [
        "",
        f"On the {n_test} test records. "
        + _written_by("ptbxl/eval/diagnosis.parquet", eval_dir, allow_unlocked=allow_unlocked),
    ]
    return "\n".join(lines)


# block name in the README -> (table that must exist, renderer)
BLOCKS = {
    "results": ("eval/diagnosis.parquet", results_block),
    "ptbxl": ("ptbxl/eval/diagnosis.parquet", ptbxl_block),
}


def replace_block(text: str, name: str, block: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"the README must hold exactly one {begin} … {end} pair")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the run's output folder (out_dir, e.g. results)")
    parser.add_argument("--write", type=Path, help="README to update in place (default: print the blocks)")
    parser.add_argument("--allow-unlocked", action="store_true", help="accept a run made outside the lock")
    args = parser.parse_args(argv)
    blocks = {
        name: render(args.results, allow_unlocked=args.allow_unlocked)
        for name, (table, render) in BLOCKS.items()
        if (args.results / table).exists()
    }
    if not blocks:
        raise SystemExit(f"{args.results}: no evaluation tables (run `snakemake all` or `snakemake ptbxl` first)")
    if args.write is None:
        sys.stdout.write("\n\n".join(f"<!-- {name} -->\n{block}" for name, block in blocks.items()) + "\n")
        return
    text = args.write.read_text()
    for name, block in blocks.items():
        text = replace_block(text, name, block)
    args.write.write_text(text)
    print(f"{args.write}: {', '.join(blocks)} block(s) rewritten from {args.results}")


if __name__ == "__main__":
    main()
