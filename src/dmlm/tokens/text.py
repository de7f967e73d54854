"""Text ids for transcripts and OCR: one text tokenizer per run, named by ``textenc``.

``local`` (a run on a freshly initialised backbone): a `tokenizers` tokenizer trained here.
Normalisation lowercases; pre-tokenisation splits on whitespace, then into digit runs, letter runs
and single other characters, so the OCR string ``3X+5=12`` becomes ``3 x + 5 = 12`` and the
transcript ``3 x plus 5 equals 12`` becomes ``3 x plus 5 equals 12``: both share the tokens ``3``,
``x``, ``5`` and ``12``. The vocabulary is trained on the train split's transcripts and OCR strings
(``[UNK]`` is id 0; ``min_frequency`` from the settings). Two settings make transcripts and OCR
share more tokens; both are undone by decoding, so a transcript round-trips exactly and WER is
scored on the words as the corpus writes them:

- ``digits``: ``whole`` (default: a WordLevel tokenizer, a digit run is one token, ``43`` one of 50
  numbers) or ``split``: a WordPiece tokenizer whose only pieces are the words (letter runs and
  symbols), the ten digits and the ten continuation digits ``##0``-``##9``, so ``43`` is
  ``4 ##3``. Numbers then share digits with each other and with the OCR, where the authors'
  post-processing glues the fraction ``43/46`` into ``4346`` (``4 ##3 ##4 ##6``; the transcript's
  ``43 over 46`` is ``4 ##3 over 4 ##6``).
- ``written``: spoken phrases read as one symbol, e.g. ``{plus: "+", equals: "="}``: the
  transcript ``5 x plus 1 equals 6`` is tokenized as ``5 x + 1 = 6``, like the OCR ``5X+1=6``
  (the OCR keeps only ``+ - =`` of the symbols: a fraction bar or an exponent mark never appears
  there). Each symbol must be one token piece that is not a number, and reading it back must give
  the transcript again: checked on every training transcript when the tokenizer is trained (an
  error names ``tokens.text.written`` and the transcript).

A pretrained backbone's name: that backbone's own tokenizer, the ``tokenizer.json`` of its
``pretrained`` folder, copied unchanged (``copy_pretrained_tokenizer``), so that text ids are the
model's native ids. Texts are encoded without the tokenizer's own special tokens (the LM sequence
adds its ``<bos>``/``</s>``).

``decode``: a tokenizer without a decoder (the local one with whole digits and no written forms)
joins tokens with single spaces; a lowercase transcript whose words are letter runs or digit runs
(the corpus' transcripts) round-trips exactly. A tokenizer with a decoder (the local one otherwise,
or a pretrained subword tokenizer) decodes with it, special tokens skipped (for the local one:
``[UNK]``), then whitespace is normalised (runs of spaces -> one, no leading or trailing space).
WER is computed on that string.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.storage import atomic_path, save_ragged

UNK = "[UNK]"
SPLIT_PATTERN = r"\d+|[^\W\d_]+|\S"  # digit runs | letter runs | any other single character
DIGIT_MODES = ("whole", "split")
CONTINUATION = "##"  # prefix of a digit that continues a number (digits: split)
ASCII_DIGITS = re.compile(r"[0-9]+")  # the runs digits: split spells out (other digit runs stay words)


def new_tokenizer(model=None, written: dict[str, str] | None = None):
    """A tokenizer with this module's normaliser and pre-tokeniser around ``model`` (default: an
    untrained WordLevel model); ``written`` phrases are replaced by their symbols (longest first)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(model if model is not None else models.WordLevel(unk_token=UNK))
    rules = [normalizers.Lowercase()]
    for phrase in sorted(written or {}, key=len, reverse=True):
        rules.append(normalizers.Replace(Regex(rf"\b{re.escape(phrase)}\b"), written[phrase]))
    tok.normalizer = normalizers.Sequence(rules)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")]
    )
    return tok


def local_decoder(written: dict[str, str] | None = None):
    """Symbols back to their phrases, then the pieces joined (continuation digits glued to the
    digit before them, every other piece after a space)."""
    from tokenizers import Regex, decoders

    back = [decoders.Replace(Regex(f"^{re.escape(symbol)}$"), phrase) for phrase, symbol in (written or {}).items()]
    # cleanup=False: no English detokenisation (it would glue "=" and "-" to their neighbours)
    return decoders.Sequence([*back, decoders.WordPiece(prefix=CONTINUATION, cleanup=False)])


def digit_pieces(words) -> dict[str, int]:
    """The ``digits: split`` vocabulary from a trained word vocabulary: ``[UNK]`` first, the words
    that are not digit runs (in their trained order), then ``0``-``9`` and ``##0``-``##9``."""
    kept = [w for w, _ in sorted(words.items(), key=lambda kv: kv[1]) if w != UNK and not ASCII_DIGITS.fullmatch(w)]
    pieces = [UNK, *kept, *"0123456789", *(CONTINUATION + d for d in "0123456789")]
    return {p: i for i, p in enumerate(pieces)}


def check_text_settings(settings: dict) -> tuple[int, str, dict[str, str]]:
    """(min_frequency, digits, written) of ``tokens.text``, each checked; errors name the key."""
    min_frequency = settings.get("min_frequency", 1)
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise DmlmError(f"tokens.text.min_frequency: expected a non-negative integer, got {min_frequency!r}")
    digits = settings.get("digits", "whole")
    if digits not in DIGIT_MODES:
        raise DmlmError(f"tokens.text.digits: expected one of {', '.join(DIGIT_MODES)}, got {digits!r}")
    written = settings.get("written") or {}
    if not isinstance(written, dict):
        raise DmlmError(f"tokens.text.written: expected a mapping of phrases to symbols, got {written!r}")
    pieces = new_tokenizer().pre_tokenizer
    for phrase, symbol in written.items():
        if not isinstance(phrase, str) or phrase != " ".join(phrase.lower().split()) or not phrase:
            raise DmlmError(f"tokens.text.written: {phrase!r} is not a phrase of lowercase words with single spaces")
        if not isinstance(symbol, str) or len(pieces.pre_tokenize_str(symbol.lower())) != 1:
            raise DmlmError(
                f"tokens.text.written.{phrase}: {symbol!r} must be one token piece (a letter run or one "
                "character other than a letter or digit)"
            )
        if re.fullmatch(r"\d+", symbol):
            raise DmlmError(f"tokens.text.written.{phrase}: {symbol!r} is a number: it could not be told from one")
    symbols = [str(v).lower() for v in written.values()]
    if len(set(symbols)) != len(symbols):
        raise DmlmError(f"tokens.text.written: two phrases share a symbol ({written}); decoding could not tell them apart")
    return min_frequency, digits, {k: v.lower() for k, v in written.items()}


def check_round_trip(tok, transcripts: list[str]) -> None:
    """Every transcript must decode from its ids as it reads without written forms (transcripts
    with a word under ``min_frequency``, i.e. an ``[UNK]``, cannot and are not asked to)."""
    plain, unk = new_tokenizer(), tok.token_to_id(UNK)
    for text, encoding in zip(transcripts, tok.encode_batch(transcripts, add_special_tokens=False)):
        back = decode(tok, encoding.ids)
        if unk not in encoding.ids and back != normalize(plain, text):
            raise DmlmError(
                f"tokens.text.written: the transcript {text!r} does not read back from its written form "
                f"({back!r}); a symbol also stands on its own there"
            )


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
    """Train the local tokenizer on ``transcript`` of the manifest plus ``ocr`` of the OCR table
    (``settings``: the config's ``tokens.text``: ``min_frequency``, optional ``digits``, ``written``)."""
    from tokenizers import models, trainers

    min_frequency, digits, written = check_text_settings(settings)
    transcripts = read_text_column(manifest_tsv, "transcript")
    texts = transcripts + (read_text_column(ocr_tsv, "ocr") if ocr_tsv is not None else [])
    if not any(t.strip() for t in texts):
        raise DmlmError(f"{manifest_tsv}: no text to train the tokenizer on")
    tok = new_tokenizer(written=written)
    trainer = trainers.WordLevelTrainer(min_frequency=min_frequency, special_tokens=[UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if digits == "split":
        vocab = digit_pieces(tok.get_vocab())
        tok = new_tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=CONTINUATION), written)
        tok.add_special_tokens([UNK])  # as the WordLevel trainer's [UNK]: skipped when decoding
    if digits == "split" or written:
        tok.decoder = local_decoder(written)
        check_round_trip(tok, transcripts)
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
    """For a local tokenizer, the string that ``decode(encode(text))`` gives when every piece is in
    the vocabulary: lowercased, split as the tokenizer splits, read back through its decoder (if any)."""
    tok = _as_tokenizer(tokenizer)
    if tok.normalizer is None or tok.pre_tokenizer is None:
        raise DmlmError("normalize: not a local text tokenizer (it has no normaliser or pre-tokeniser)")
    pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]
    return " ".join(pieces) if tok.decoder is None else " ".join(tok.decoder.decode(pieces).split())


def describe(tokenizer) -> dict:
    """Vocabulary size of the text tokenizer (added tokens included), its model type (``wordlevel``,
    ``bpe``, ...) as ``encoder``; text has no frame rate."""
    import json

    tok = _as_tokenizer(tokenizer)
    kind = json.loads(tok.to_str()).get("model", {}).get("type", "unknown").lower()
    return {"vocab_size": int(tok.get_vocab_size(with_added_tokens=True)), "frame_rate": None, "encoder": kind}
