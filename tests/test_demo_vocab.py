"""The demo WordPiece vocabulary (hftri_mimic.dataset.text.build_demo_vocab): the same texts give the same vocabulary in
every process (tokenizers' trainer did not: its ids followed hash-map order), and it spells every text."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from tokenizers.pre_tokenizers import BertPreTokenizer

from hftri_mimic.dataset.text import SPECIAL_TOKENS, build_demo_vocab, load_tokenizer

TEXTS = [
    "Age of the patient is 84 years. Gender of the patient is female. NT-proBNP of the blood is 1234 pg/mL.",
    "Age of the patient is 61 years. Gender of the patient is male. Creatinine of the blood is 1.2 mg/dL.",
    "Sodium of the blood is 139 mEq/L. Ejection fraction is reduced; Rx: furosemide, lisinopril.",
] * 3

BUILD = """
import sys
from tokenizers.pre_tokenizers import BertPreTokenizer

from hftri_mimic.dataset.text import build_demo_vocab
texts = sys.stdin.read().split("\\n")
build_demo_vocab(texts, sys.argv[1], vocab_size=int(sys.argv[2]))
"""


def _build_in_new_process(folder: Path, vocab_size: int) -> bytes:
    # a fresh interpreter each time: hash seeds (Python's and the Rust library's) differ between processes
    subprocess.run(
        [sys.executable, "-c", BUILD, str(folder), str(vocab_size)], input="\n".join(TEXTS), text=True, check=True
    )
    return (folder / "vocab.txt").read_bytes()


def test_two_processes_build_the_same_vocabulary(tmp_path):
    first = _build_in_new_process(tmp_path / "a", 3000)
    assert first == _build_in_new_process(tmp_path / "b", 3000)
    assert first == _build_in_new_process(tmp_path / "c", 3000)


def test_the_vocabulary_spells_every_text_and_keeps_frequent_words_whole(tmp_path):
    build_demo_vocab(TEXTS, tmp_path, vocab_size=3000)
    tokens = (tmp_path / "vocab.txt").read_text().splitlines()
    assert tokens[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS and len(tokens) == len(set(tokens))
    tokenizer = load_tokenizer(tmp_path)
    for text in [*TEXTS, "Natrium of the blood is 4.2 mEq/L."]:  # Natrium: a word the texts lack
        assert "[UNK]" not in tokenizer.encode(text).tokens
    assert tokenizer.encode("the patient").tokens == ["[CLS]", "the", "patient", "[SEP]"]


def test_vocab_size_caps_the_words_but_never_the_characters(tmp_path):
    build_demo_vocab(TEXTS, tmp_path / "small", vocab_size=10)
    tokens = (tmp_path / "small" / "vocab.txt").read_text().splitlines()
    characters = {c for text in TEXTS for c in text if not c.isspace()}
    assert characters <= set(tokens) and {f"##{c}" for c in characters} <= set(tokens)
    assert "patient" not in tokens  # no room left for words
    build_demo_vocab(TEXTS, tmp_path / "one_more", vocab_size=len(tokens) + 1)
    words = Counter(w for text in TEXTS for w, _ in BertPreTokenizer().pre_tokenize_str(text) if len(w) > 1)
    most_frequent = max(sorted(words), key=words.__getitem__)
    assert (tmp_path / "one_more" / "vocab.txt").read_text().splitlines()[-1] == most_frequent
