"""The language model's vocabulary: special tokens, the text range, one range per codebook.

Layout (ids in order)::

    0 <pad>  1 <bos>  2 </s>  3 <text>
    4 <audio> 5 </audio>  6 <lips> 7 </lips>  8 <image> 9 </image>  10 <ocr> 11 </ocr>
    12 ...                  text tokenizer ids (transcript and OCR share this range)
    ...                     audio codebook, then lips codebook, then image codebook

The special ids are the same for every run; the ranges after them depend on the text tokenizer's
size and the codebook sizes, so the layout is stored in every checkpoint (``to_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dmlm.errors import DmlmError

PAD, BOS, EOS, TEXT = 0, 1, 2, 3
#: every modality a run may use, in the order of its begin/end token pairs
MODALITIES = ("audio", "lips", "image", "ocr")
#: modalities whose tokens are codebook ids (each has its own id range)
DISCRETE = ("audio", "lips", "image")
#: modalities whose tokens are text tokenizer ids
TEXTUAL = ("ocr",)
SPECIAL_TOKENS = ["<pad>", "<bos>", "</s>", "<text>"] + [t for m in MODALITIES for t in (f"<{m}>", f"</{m}>")]
TEXT_OFFSET = len(SPECIAL_TOKENS)


def text_vocab_size(tokenizer_json: str) -> int:
    """Number of ids of a ``tokenizers`` tokenizer (added tokens included)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(tokenizer_json)).get_vocab_size(with_added_tokens=True)
    except Exception as err:  # missing file, bad JSON, wrong format
        raise DmlmError(f"cannot read the text tokenizer {tokenizer_json}: {err}") from err


@dataclass
class VocabLayout:
    """Where each kind of token lives in the LM vocabulary.

    ``modalities``: the run's input modalities, in sequence order (e.g. ``["audio", "ocr"]``).
    ``codebooks``: codebook size per discrete modality; every discrete modality gets a range, used
    by the run or not, so runs of one study share a layout when their codebooks agree.
    ``text_size``: the text tokenizer's vocabulary size.
    """

    modalities: list[str]
    codebooks: dict[str, int]
    text_size: int
    offsets: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.modalities = list(self.modalities)
        self.codebooks = {m: int(self.codebooks[m]) for m in DISCRETE if m in self.codebooks}
        self.text_size = int(self.text_size)
        for m in self.modalities:
            if m not in MODALITIES:
                raise DmlmError(f"modalities: unknown modality {m!r} (known: {', '.join(MODALITIES)})")
            if m in DISCRETE and m not in self.codebooks:
                raise DmlmError(f"vocab.{m}: no codebook size given for modality {m!r}")
        if len(set(self.modalities)) != len(self.modalities):
            raise DmlmError(f"modalities: repeated modality in {self.modalities}")
        if self.text_size <= 0:
            raise DmlmError(f"text tokenizer has no tokens (size {self.text_size})")
        for m, n in self.codebooks.items():
            if n <= 0:
                raise DmlmError(f"vocab.{m}: codebook size must be positive, got {n}")
        self.offsets = {"text": TEXT_OFFSET}
        nxt = TEXT_OFFSET + self.text_size
        for m in DISCRETE:
            if m in self.codebooks:
                self.offsets[m] = nxt
                nxt += self.codebooks[m]
        self._size = nxt

    @classmethod
    def from_tokenizer(cls, modalities, codebooks: dict[str, int], tokenizer_json: str) -> "VocabLayout":
        return cls(list(modalities), dict(codebooks), text_vocab_size(tokenizer_json))

    # -- sizes and ids ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def text_range(self) -> tuple[int, int]:
        """[start, stop) of text ids in the LM vocabulary."""
        return TEXT_OFFSET, TEXT_OFFSET + self.text_size

    @staticmethod
    def begin(modality: str) -> int:
        return TEXT_OFFSET - 2 * len(MODALITIES) + 2 * MODALITIES.index(modality)

    @staticmethod
    def end(modality: str) -> int:
        return VocabLayout.begin(modality) + 1

    def _range(self, name: str) -> tuple[int, int]:
        if name in ("text", "transcript") or name in TEXTUAL:
            return self.text_range
        if name in self.offsets:
            return self.offsets[name], self.offsets[name] + self.codebooks[name]
        raise DmlmError(f"no id range for stream {name!r} (layout has {', '.join(self.offsets)})")

    def to_lm(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Map one stream's ids (codebook or text ids; ``name`` a modality or "transcript") to LM ids."""
        ids = np.asarray(ids, dtype=np.int64)
        start, stop = self._range(name)
        if ids.size and (ids.min() < 0 or ids.max() >= stop - start):
            raise DmlmError(
                f"{name} token ids must lie in [0, {stop - start}) for this vocabulary, "
                f"found [{ids.min()}, {ids.max()}] (codebook or tokenizer size mismatch?)"
            )
        return ids + start

    def is_text(self, lm_ids: np.ndarray) -> np.ndarray:
        lm_ids = np.asarray(lm_ids)
        start, stop = self.text_range
        return (lm_ids >= start) & (lm_ids < stop)

    def to_text(self, lm_ids: np.ndarray) -> np.ndarray:
        """LM ids -> text tokenizer ids (int32); every id must be in the text range."""
        lm_ids = np.asarray(lm_ids, dtype=np.int64)
        if not self.is_text(lm_ids).all():
            raise ValueError(f"non-text ids in {lm_ids.tolist()}")
        return (lm_ids - TEXT_OFFSET).astype(np.int32)

    def token_name(self, lm_id: int) -> str:
        """Readable name of one LM id (for debugging)."""
        if lm_id < TEXT_OFFSET:
            return SPECIAL_TOKENS[lm_id]
        for name in ["text", *DISCRETE]:
            if name in self.offsets:
                start, stop = self._range(name)
                if start <= lm_id < stop:
                    return f"{name}:{lm_id - start}"
        return f"?{lm_id}"

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"modalities": list(self.modalities), "codebooks": dict(self.codebooks), "text_size": self.text_size}

    @classmethod
    def from_dict(cls, d: dict) -> "VocabLayout":
        return cls(d["modalities"], d["codebooks"], d["text_size"])
