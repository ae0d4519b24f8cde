"""Lab text (paper §4.2.1): each patient's EHR snapshot as sentences "<column name> of the <object> is
<value>", and the check that it fits the text encoder's 512 tokens.

Sentence order: demographics, body measures, labs (configured order), medical history, drug history.
Missing values are omitted (no sentence), never written as "unknown": the model must not learn from
missingness it cannot see in the real data the same way. Absent history groups or drug classes are
omitted too (no earlier admission is not the same as no disease).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MEASURES = (("height_cm", "Height", "cm"), ("weight_kg", "Weight", "kg"), ("bmi", "BMI", "kg/m2"))


def _number(value: float, decimals: int = 1) -> str:
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _names(values: Sequence[str]) -> str:
    return ", ".join(v.replace("_", " ") for v in values)


def patient_sentences(row: dict, labs: Sequence[dict], history: Sequence[str], drugs: Sequence[str]) -> list[str]:
    """The sentences of one patient (no trailing punctuation).

    row: age, gender ('M'/'F'), race, and height_cm / weight_kg / bmi (each may be None).
    labs: dicts with label, fluid, value (as recorded), valueuom, in the configured item order.
    """
    sentences = []
    if row.get("age") is not None:
        sentences.append(f"Age of the patient is {int(row['age'])} years")
    gender = {"M": "male", "F": "female"}.get(row.get("gender") or "")
    if gender:
        sentences.append(f"Gender of the patient is {gender}")
    if row.get("race") and row["race"].upper() not in ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER"):
        sentences.append(f"Race of the patient is {row['race'].lower()}")
    for column, name, unit in MEASURES:
        if row.get(column) is not None:
            sentences.append(f"{name} of the patient is {_number(row[column])} {unit}")
    for lab in labs:
        obj = (lab.get("fluid") or "blood").lower()
        unit = f" {lab['valueuom']}" if lab.get("valueuom") else ""
        sentences.append(f"{lab['label']} of the {obj} is {lab['value'].strip()}{unit}")
    if history:
        sentences.append(f"Medical history of the patient is {_names(history)}")
    if drugs:
        sentences.append(f"Drug history of the patient is {_names(drugs)}")
    return sentences


def join_sentences(sentences: Sequence[str]) -> str:
    return ". ".join(sentences) + "." if sentences else ""


def build_texts(
    patients: pl.DataFrame,
    lab_values: pl.DataFrame,
    measures: pl.DataFrame,
    history: pl.DataFrame,
    drugs: pl.DataFrame,
    lab_itemids: Sequence[int],
    history_order: Sequence[str],
    drug_order: Sequence[str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(labs, texts): the wide table of values (one row per patient) and the sentences per patient.

    patients: subject_id, age, gender, race. lab_values: long (subject_id, itemid, label, fluid, value,
    valuenum, valueuom). measures: long (subject_id, measure, value). history / drugs: long
    (subject_id, history_group / drug_class).
    """
    order = {int(i): k for k, i in enumerate(lab_itemids)}
    labs_long = lab_values.with_columns(order=pl.col("itemid").replace_strict(order, default=len(order)))
    wide_measures = measures.pivot(on="measure", index="subject_id", values="value") if measures.height else None
    table = patients.select("subject_id", "age", "gender", "race")
    for column, _, _ in MEASURES:
        if wide_measures is not None and column in wide_measures.columns:
            table = table.join(wide_measures.select("subject_id", column), on="subject_id", how="left")
        else:
            table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    labels = labs_long.select("itemid", "label", "order").unique().sort("order")
    for itemid, label, _ in labels.iter_rows():
        values = labs_long.filter(pl.col("itemid") == itemid).select("subject_id", pl.col("valuenum").alias(label))
        table = table.join(values, on="subject_id", how="left")
    for name in history_order:
        members = history.filter(pl.col("history_group") == name)["subject_id"]
        table = table.with_columns(pl.col("subject_id").is_in(members.to_list()).alias(f"history_{name}"))
    for name in drug_order:
        members = drugs.filter(pl.col("drug_class") == name)["subject_id"]
        table = table.with_columns(pl.col("subject_id").is_in(members.to_list()).alias(f"drug_{name}"))

    labs_by_patient = {k[0]: g.sort("order").to_dicts() for k, g in labs_long.group_by("subject_id")}
    rows = []
    for row in table.iter_rows(named=True):
        patient_history = [n for n in history_order if row[f"history_{n}"]]
        patient_drugs = [n for n in drug_order if row[f"drug_{n}"]]
        sentences = patient_sentences(row, labs_by_patient.get(row["subject_id"], []), patient_history, patient_drugs)
        rows.append(
            {
                "subject_id": row["subject_id"],
                "text": join_sentences(sentences),
                "n_sentences": len(sentences),
                "n_lab_values": len(labs_by_patient.get(row["subject_id"], [])),
            }
        )
    texts = pl.DataFrame(
        rows, schema={"subject_id": pl.Int64, "text": pl.String, "n_sentences": pl.Int64, "n_lab_values": pl.Int64}
    )
    return table.sort("subject_id"), texts.sort("subject_id")


def build_demo_vocab(texts: Sequence[str], folder: Path | str, vocab_size: int = 3000, lowercase: bool = False) -> Path:
    """A small WordPiece vocabulary (vocab.txt, BERT layout) from the dataset's own texts, so the demo needs no
    download. Real runs point ``dataset.text.tokenizer`` at Bio_ClinicalBERT's folder.

    Layout: the special tokens, every character of the texts, every character as a ``##`` continuation, then the
    texts' words by descending count (ties alphabetical) up to ``vocab_size``. A word outside the vocabulary is
    spelt with the character tokens, so nothing maps to [UNK].

    Why not ``tokenizers``' WordPiece trainer: it numbers its alphabet in hash-map order, which changes from one
    process to the next, and breaks ties between equally frequent merges by those numbers, so two runs on the same
    texts learned different vocabularies (239 of 965 ids differed between two runs of the default demo), hence
    different token ids, lab-text features and results. BERT's own normaliser and pre-tokeniser (from
    ``tokenizers``) still split the words, so the vocabulary fits the tokenizer that reads it.
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({c for word in counts for c in word})
    tokens = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters)]
    known = set(tokens)
    words = sorted((w for w in counts if w not in known), key=lambda w: (-counts[w], w))
    tokens += words[: max(vocab_size - len(tokens), 0)]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    return folder / "vocab.txt"


def load_tokenizer(folder: Path | str, lowercase: bool = False) -> Tokenizer:
    """The WordPiece tokenizer of a BERT folder (only vocab.txt is needed, as in Bio_ClinicalBERT's)."""
    vocab = Path(folder) / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: a BERT tokenizer folder needs vocab.txt")
    return BertWordPieceTokenizer(str(vocab), lowercase=lowercase)


def fit_texts(texts: pl.DataFrame, tokenizer: Tokenizer, max_tokens: int, on_overflow: str) -> pl.DataFrame:
    """Count tokens ([CLS] and [SEP] included) and apply the overflow policy.

    ``error``: any text longer than max_tokens stops the run, naming how many patients and the longest.
    ``truncate``: trailing sentences (drug, then history, then the last labs) are dropped until it fits;
    ``truncated`` says which texts were cut.
    """
    if on_overflow not in ("error", "truncate"):
        raise ValueError(f"dataset.text.on_overflow must be 'error' or 'truncate', got {on_overflow!r}")
    rows = []
    too_long = []
    for subject_id, text in texts.select("subject_id", "text").iter_rows():
        n = len(tokenizer.encode(text).ids)
        truncated = False
        if n > max_tokens:
            too_long.append(n)
            if on_overflow == "truncate":
                sentences = text.rstrip(".").split(". ")
                while sentences and n > max_tokens:
                    sentences.pop()
                    text = join_sentences(sentences)
                    n = len(tokenizer.encode(text).ids)
                truncated = True
        rows.append({"subject_id": subject_id, "text": text, "n_tokens": n, "truncated": truncated})
    if too_long and on_overflow == "error":
        raise ValueError(
            f"{len(too_long)} lab texts exceed {max_tokens} tokens (longest {max(too_long)}); "
            "set dataset.text.on_overflow: truncate or shorten the configured items"
        )
    out = texts.drop("text").join(pl.DataFrame(rows), on="subject_id", how="left")
    log.info(
        "lab texts: %d patients, tokens median %d, max %d, %d truncated",
        out.height,
        int(out["n_tokens"].median() or 0),
        int(out["n_tokens"].max() or 0),
        int(out["truncated"].sum()),
    )
    return out.select("subject_id", "text", "n_tokens", "truncated", "n_sentences", "n_lab_values")
