"""Text ids for transcripts and OCR: one text tokenizer per run, named by ``textenc``.

``local`` (a run on a freshly initialised backbone): a `tokenizers` WordLevel tokenizer trained
here. Normalisation lowercases; pre-tokenisation splits on whitespace, then into digit runs,
letter runs and single other characters, so the OCR string ``3X+5=12`` becomes ``3 x + 5 = 12``
and the transcript ``3 x plus 5 equals 12`` becomes ``3 x plus 5 equals 12``: both share the
tokens ``3``, ``x``, ``5`` and ``12``. The vocabulary is trained on the train split's transcripts
and OCR strings (``[UNK]`` is id 0; ``min_frequency`` from the settings).

A pretrained backbone's name: that backbone's own tokenizer, the ``tokenizer.json`` of its
``pretrained`` folder, copied unchanged (``copy_pretrained_tokenizer``), so that text ids are the
model's native ids. Texts are encoded without the tokenizer's own special tokens (the LM sequence
adds its ``<bos>``/``</s>``).

``decode``: a tokenizer without a decoder (the local one) joins tokens with single spaces; a
lowercase transcript whose words are letter runs or digit runs (the corpus' transcripts)
round-trips exactly. A tokenizer with a decoder (a pretrained subword tokenizer) decodes with it,
special tokens skipped, then whitespace is normalised (runs of spaces -> one, no leading or
trailing space). WER is computed on that string.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.storage import atomic_path, save_ragged

UNK = "[UNK]"
SPLIT_PATTERN = r"\d+|[^\W\d_]+|\S"  # digit runs | letter runs | any other single character


def new_tokenizer():
    """An untrained tokenizer with this module's normaliser and pre-tokeniser."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")]
    )
    return tok


def read_text_column(table_tsv: str | os.PathLike, column: str) -> list[str]:
    """The strings of ``column`` in a TSV table (every cell as text: "007" stays "007", "" stays "")."""
    import pandas as pd

    path = Path(table_tsv)
    if not path.exists():
        raise DmlmError(f"table missing: {path}")
    # as dmlm.storage.read_table, but every column as str so numeric-looking text is kept verbatim
    try:
        frame = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    except (ValueError, pd.errors.ParserError) as err:
        raise DmlmError(f"{path}: unreadable table ({err})") from None
    if column not in frame.columns:
        raise DmlmError(f"{path}: no column {column!r} (columns: {list(frame.columns)})")
    return frame[column].tolist()


def train_text_tokenizer(
    manifest_tsv: str | os.PathLike,
    ocr_tsv: str | os.PathLike | None,
    out_json: str | os.PathLike,
    settings: dict,
):
    """Train the WordLevel tokenizer on ``transcript`` of the manifest plus ``ocr`` of the OCR table."""
    from tokenizers import trainers

    min_frequency = settings.get("min_frequency", 1)
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise DmlmError(f"tokens.text.min_frequency: expected a non-negative integer, got {min_frequency!r}")
    texts = read_text_column(manifest_tsv, "transcript")
    if ocr_tsv is not None:
        texts += read_text_column(ocr_tsv, "ocr")
    if not any(t.strip() for t in texts):
        raise DmlmError(f"{manifest_tsv}: no text to train the tokenizer on")
    tok = new_tokenizer()
    trainer = trainers.WordLevelTrainer(min_frequency=min_frequency, special_tokens=[UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    with atomic_path(out_json) as tmp:
        tmp.write_text(tok.to_str(pretty=True))
    return tok


def copy_pretrained_tokenizer(folder: str | os.PathLike, out_json: str | os.PathLike, backbone: str = "?"):
    """Copy the ``tokenizer.json`` of a pretrained backbone's folder to ``out_json`` (checked loadable)."""
    source = Path(folder) / "tokenizer.json"
    if not source.is_file():
        raise DmlmError(
            f"backbones.{backbone}.pretrained: {folder} has no tokenizer.json (save the model's fast "
            "tokenizer into the same folder with save_pretrained)"
        )
    tok = load_tokenizer(source)
    with atomic_path(out_json) as tmp:
        tmp.write_bytes(source.read_bytes())
    return tok


def load_tokenizer(tokenizer_json: str | os.PathLike):
    from tokenizers import Tokenizer

    path = Path(tokenizer_json)
    if not path.exists():
        raise DmlmError(f"tokenizer file missing: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on bad JSON
        raise DmlmError(f"{path}: not a tokenizers JSON file ({err})") from None


def _as_tokenizer(tokenizer):
    return load_tokenizer(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer


def encode_texts(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """int32 ids per string (an empty string gives zero ids)."""
    tok = _as_tokenizer(tokenizer)
    return [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def encode_table(
    tokenizer_json: str | os.PathLike, table_tsv: str | os.PathLike, column: str, out_prefix: str | os.PathLike
) -> list[np.ndarray]:
    """Encode ``column`` of the table row by row; write the ids as a ragged int32 array at ``out_prefix``."""
    tok = load_tokenizer(tokenizer_json)
    ids = encode_texts(tok, read_text_column(table_tsv, column))
    save_ragged(out_prefix, ids, dtype=np.int32)
    return ids


def decode(tokenizer, ids) -> str:
    """The words of ``ids``: tokens joined by single spaces for a tokenizer without a decoder
    (unknown words appear as ``[UNK]``), else the tokenizer's own decoding, whitespace-normalised."""
    tok = _as_tokenizer(tokenizer)
    ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
    words = []
    for i in ids:
        word = tok.id_to_token(i)
        if word is None:
            raise DmlmError(f"text id {i} is outside the tokenizer's vocabulary ({tok.get_vocab_size()} ids)")
        words.append(word)
    if tok.decoder is None:
        return " ".join(words)
    return " ".join(tok.decode(ids, skip_special_tokens=True).split())


def normalize(tokenizer, text: str) -> str:
    """The string that ``decode(encode(text))`` gives: lowercased, split as the tokenizer splits."""
    tok = _as_tokenizer(tokenizer)
    pieces = tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
    return " ".join(p for p, _ in pieces)


def describe(tokenizer) -> dict:
    """Vocabulary size of the text tokenizer (added tokens included), its model type (``wordlevel``,
    ``bpe``, ...) as ``encoder``; text has no frame rate."""
    import json

    tok = _as_tokenizer(tokenizer)
    kind = json.loads(tok.to_str()).get("model", {}).get("type", "unknown").lower()
    return {"vocab_size": int(tok.get_vocab_size(with_added_tokens=True)), "frame_rate": None, "encoder": kind}
