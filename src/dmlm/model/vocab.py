"""The language model's vocabulary: special tokens, the text range, one range per codebook.

Two layouts. The *local* layout (a freshly initialised backbone, locally trained text tokenizer)::

    0 <pad>  1 <bos>  2 </s>  3 <text>
    4 <audio> 5 </audio>  6 <lips> 7 </lips>  8 <image> 9 </image>  10 <ocr> 11 </ocr>
    12 ...                  text tokenizer ids (transcript and OCR share this range)
    ...                     audio codebook, then lips codebook, then image codebook

The *native* layout (a pretrained backbone with its own tokenizer) keeps the pretrained model's
ids: text ids are unshifted, ``[0, text_size)``, and reuse the model's own ``<pad>``, ``<bos>`` and
``</s>`` when its config names them; the other special tokens (``<text>``, the modality pairs and
any special the model lacks) and then the codebook ranges are appended after the pretrained
embedding rows (``embeddings``), so the model's embeddings keep their meaning.

The ranges depend on the text tokenizer's size and the codebook sizes, so the layout is stored in
every checkpoint (``to_dict``). ``PAD``, ``BOS``, ``EOS``, ``TEXT`` are the local layout's ids; code
that serves both layouts asks the layout (``layout.pad``, ``layout.bos``, ...).
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
#: how the modality blocks are laid out in a sequence (the study axis ``layout``; see
#: ``dmlm.model.sequence``): each modality its own block, or synchronized streams interleaved by time
ARRANGEMENTS = ("blocked", "interleaved")


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
    ``native``: None for the local layout; for the native layout ``{"embeddings": n, "pad": id,
    "bos": id, "eos": id}``: the pretrained model's embedding rows and its own special ids (each
    may be None: that token is then appended).
    ``arrangement``: ``blocked`` or ``interleaved`` (``ARRANGEMENTS``): how ``dmlm.model.sequence``
    lays the modalities out; kept here so that a checkpoint's layout rebuilds its prompts exactly.
    """

    modalities: list[str]
    codebooks: dict[str, int]
    text_size: int
    native: dict | None = None
    arrangement: str = "blocked"
    offsets: dict[str, int] = field(init=False)
    specials: dict[str, int] = field(init=False)

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
        if self.arrangement not in ARRANGEMENTS:
            raise DmlmError(f"layout: unknown sequence layout {self.arrangement!r} (known: {', '.join(ARRANGEMENTS)})")
        if self.text_size <= 0:
            raise DmlmError(f"text tokenizer has no tokens (size {self.text_size})")
        for m, n in self.codebooks.items():
            if n <= 0:
                raise DmlmError(f"vocab.{m}: codebook size must be positive, got {n}")
        if self.native is None:
            self.specials = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
            self.offsets = {"text": TEXT_OFFSET}
            nxt = TEXT_OFFSET + self.text_size
        else:
            self.offsets = {"text": 0}
            nxt = self._native_specials()
        for m in DISCRETE:
            if m in self.codebooks:
                self.offsets[m] = nxt
                nxt += self.codebooks[m]
        self._size = nxt

    def _native_specials(self) -> int:
        """Fill ``specials`` for the native layout; returns the first id after them."""
        native = {k: self.native.get(k) for k in ("embeddings", "pad", "bos", "eos")}
        native["embeddings"] = int(native["embeddings"] or 0)
        self.native = native
        own = {"<pad>": native["pad"], "<bos>": native["bos"], "</s>": native["eos"]}
        nxt = max(native["embeddings"], self.text_size)
        self.specials = {}
        for token in SPECIAL_TOKENS:
            if own.get(token) is not None:
                i = int(own[token])
                if not 0 <= i < nxt:
                    raise DmlmError(f"pretrained {token} id {i} lies outside the pretrained vocabulary [0, {nxt})")
                self.specials[token] = i
            else:
                self.specials[token] = nxt
                nxt += 1
        return nxt

    @classmethod
    def from_tokenizer(cls, modalities, codebooks: dict[str, int], tokenizer_json: str, native=None) -> "VocabLayout":
        return cls(list(modalities), dict(codebooks), text_vocab_size(tokenizer_json), native)

    # -- sizes and ids ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def is_native(self) -> bool:
        return self.native is not None

    @property
    def text_range(self) -> tuple[int, int]:
        """[start, stop) of text ids in the LM vocabulary."""
        return self.offsets["text"], self.offsets["text"] + self.text_size

    pad = property(lambda self: self.specials["<pad>"])
    bos = property(lambda self: self.specials["<bos>"])
    eos = property(lambda self: self.specials["</s>"])
    text_tag = property(lambda self: self.specials["<text>"], doc="the ``<text>`` token's id")

    def begin(self, modality: str) -> int:
        return self.specials[f"<{modality}>"]

    def end(self, modality: str) -> int:
        return self.specials[f"</{modality}>"]

    def output_mask(self) -> np.ndarray:
        """Bool per LM id: may the decoder emit it? The text range and ``</s>``, but not ``<pad>``
        or ``<bos>`` (in the native layout these may lie in the text range)."""
        allowed = np.zeros(self.vocab_size, dtype=bool)
        allowed[slice(*self.text_range)] = True
        allowed[[self.pad, self.bos]] = False
        allowed[self.eos] = True
        return allowed

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
        return (lm_ids - self.offsets["text"]).astype(np.int32)

    def token_name(self, lm_id: int) -> str:
        """Readable name of one LM id (for debugging)."""
        for token, i in self.specials.items():
            if i == lm_id:
                return token
        for name in ["text", *DISCRETE]:
            if name in self.offsets:
                start, stop = self._range(name)
                if start <= lm_id < stop:
                    return f"{name}:{lm_id - start}"
        return f"?{lm_id}"

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"modalities": list(self.modalities), "codebooks": dict(self.codebooks), "text_size": self.text_size}
        if self.native is not None:
            d["native"] = dict(self.native)
        if self.arrangement != "blocked":  # older checkpoints have no key: blocked
            d["arrangement"] = self.arrangement
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VocabLayout":
        return cls(d["modalities"], d["codebooks"], d["text_size"], d.get("native"), d.get("arrangement", "blocked"))
