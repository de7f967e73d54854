"""Training data: assembled sequences of a split, length-bucketed batch order, padded batches.

``load_streams`` reads a split's ragged token streams (and the token times an interleaved layout
needs), ``assemble_split`` turns them into LM sequences (``sequence.assemble``), ``fit_to_length``
applies the over-length policy, ``BatchOrder`` gives the batch of every training step as a pure
function of (seed, step), and ``collate`` pads a batch on the right with the layout's ``<pad>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model.sequence import assemble, check_lengths, input_streams
from dmlm.model.vocab import VocabLayout
from dmlm.storage import Ragged

CHUNK_BATCHES = 50  # length bucketing: sort by length within chunks of this many batches


@dataclass
class Sequences:
    """All assembled sequences of one split."""

    ids: list[np.ndarray]
    weights: list[np.ndarray]
    text_start: np.ndarray  # first transcript position (just after <text>) of each sequence
    lengths: np.ndarray
    pad: int  # the layout's <pad> id

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> "Sequences":
        """The sequences where the bool mask ``keep`` is true."""
        idx = np.flatnonzero(keep)
        return Sequences(
            [self.ids[i] for i in idx], [self.weights[i] for i in idx], self.text_start[idx], self.lengths[idx], self.pad
        )


def load_streams(split: str, prefixes: dict[str, str], layout: VocabLayout) -> dict[str, Ragged]:
    needed = [*input_streams(layout), "transcript"]
    for name in prefixes:
        if name not in needed:
            raise DmlmError(f"stream {split}:{name} given, but the run uses only {', '.join(needed)}")
    out = {}
    for name in needed:
        if name not in prefixes:
            raise DmlmError(f"stream {split}:{name} is missing (the run uses {', '.join(needed)})")
        try:
            out[name] = Ragged.load(prefixes[name])
        except (FileNotFoundError, ValueError) as err:
            raise DmlmError(f"stream {split}:{name}: {err}") from err
    counts = {name: len(r) for name, r in out.items()}
    if len(set(counts.values())) != 1:
        raise DmlmError(f"streams of split {split} disagree on the number of utterances: {counts}")
    if next(iter(counts.values())) == 0:
        raise DmlmError(f"split {split} has no utterances")
    return out


def assemble_split(
    streams: dict[str, Ragged], layout: VocabLayout, loss_weights: dict, variant: str = "weighted"
) -> Sequences:
    """Every utterance's sequence and position weights (``variant``: ``sequence.LOSS_VARIANTS``)."""
    n = len(streams["transcript"])
    ids, weights, text_start = [], [], []
    for i in range(n):
        x, w = assemble({name: r[i] for name, r in streams.items()}, layout, loss_weights, variant)
        ids.append(x)
        weights.append(w)
        text_start.append(int(np.flatnonzero(x == layout.text_tag)[0]) + 1)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    return Sequences(ids, weights, np.array(text_start, dtype=np.int64), lengths, layout.pad)


def fit_to_length(seqs: Sequences, max_positions: int, backbone_name: str, split: str, policy: str) -> Sequences:
    """The sequences the over-length ``policy`` keeps (``sequence.check_lengths``)."""
    keep = check_lengths(seqs.lengths, max_positions, backbone_name, f"the {split} split", policy)
    return seqs if keep.all() else seqs.subset(keep)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's batches: shuffle, sort by length within chunks of CHUNK_BATCHES batches (little
    padding), shuffle the batches. A pure function of (seed, epoch); ceil(n / batch_size) batches."""
    rng = np.random.default_rng([seed, 0, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for s in range(0, len(perm), chunk):
        c = perm[s : s + chunk]
        c = c[np.argsort(lengths[c], kind="stable")]
        batches += [c[i : i + batch_size] for i in range(0, len(c), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class BatchOrder:
    """The batch of each (1-based) training step; the data position is a function of the step."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = -(-len(lengths) // batch_size)
        self._epoch, self._batches = None, None

    def position(self, step: int) -> tuple[int, int]:
        return divmod(step - 1, self.per_epoch)

    def batch(self, step: int) -> np.ndarray:
        epoch, index = self.position(step)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(self.lengths, self.batch_size, self.seed, epoch)
        return self._batches[index]


def val_batches(lengths: np.ndarray, batch_size: int, n_batches: int, seed: int) -> list[np.ndarray]:
    """Fixed validation batches: a seeded sample of n_batches * batch_size utterances (all when fewer),
    sorted by length."""
    pick = np.random.default_rng([seed, 1]).permutation(len(lengths))[: n_batches * batch_size]
    pick = pick[np.argsort(lengths[pick], kind="stable")]
    return [pick[i : i + batch_size] for i in range(0, len(pick), batch_size)]


def collate(seqs: Sequences, idx):
    """Right-padded (input_ids, weights, transcript_mask) tensors of the utterances ``idx``.

    ``transcript_mask`` marks target positions of transcript tokens and ``</s>``."""
    import torch

    width = int(seqs.lengths[idx].max())
    ids = np.full((len(idx), width), seqs.pad, dtype=np.int64)
    w = np.zeros((len(idx), width), dtype=np.float32)
    text = np.zeros((len(idx), width), dtype=bool)
    for row, i in enumerate(idx):
        n = seqs.lengths[i]
        ids[row, :n] = seqs.ids[i]
        w[row, :n] = seqs.weights[i]
        text[row, seqs.text_start[i] : n] = True
    return torch.from_numpy(ids), torch.from_numpy(w), torch.from_numpy(text)
