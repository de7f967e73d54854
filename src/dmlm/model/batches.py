"""Training data: assembled sequences of a split, length-bucketed batch order, padded batches.

``load_streams`` reads a split's ragged token streams (and the token times an interleaved layout
needs), ``assemble_split`` turns them into LM sequences (``sequence.assemble``), ``fit_to_length``
applies the over-length policy, ``BatchOrder`` gives the batch of every training step as a pure
function of (seed, step), ``dropped_rows`` which of its sequences leave the audio out (modality
dropout, ``training.drop_audio``), and ``collate`` pads a batch on the right with the layout's
``<pad>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model.sequence import assemble_groups, check_lengths, input_streams, position_weights
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
    # the same sequences with one group's positions left out (modality dropout), when asked for
    dropped: "Sequences | None" = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> "Sequences":
        """The sequences where the bool mask ``keep`` is true."""
        idx = np.flatnonzero(keep)
        return Sequences(
            [self.ids[i] for i in idx],
            [self.weights[i] for i in idx],
            self.text_start[idx],
            self.lengths[idx],
            self.pad,
            None if self.dropped is None else self.dropped.subset(keep),
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


def _sequences(ids: list[np.ndarray], weights: list[np.ndarray], layout: VocabLayout) -> Sequences:
    text_start = np.array([int(np.flatnonzero(x == layout.text_tag)[0]) + 1 for x in ids], dtype=np.int64)
    return Sequences(ids, weights, text_start, np.array([len(x) for x in ids], dtype=np.int64), layout.pad)


def assemble_split(
    streams: dict[str, Ragged],
    layout: VocabLayout,
    loss_weights: dict,
    variant: str = "weighted",
    drop: str | None = None,
) -> Sequences:
    """Every utterance's sequence and position weights (``variant``: ``sequence.LOSS_VARIANTS``).

    With ``drop`` (a modality), ``Sequences.dropped`` holds each sequence with that modality's
    positions (its tokens and tags) left out and the others weighted as before."""
    ids, weights, kept_ids, kept_weights = [], [], [], []
    for i in range(len(streams["transcript"])):
        x, owners = assemble_groups({name: r[i] for name, r in streams.items()}, layout)
        w = position_weights(owners, loss_weights, variant)
        ids.append(x)
        weights.append(w)
        if drop is not None:
            keep = np.array([o != drop for o in owners])
            kept_ids.append(x[keep])
            kept_weights.append(w[keep])
    seqs = _sequences(ids, weights, layout)
    if drop is not None:
        seqs.dropped = _sequences(kept_ids, kept_weights, layout)
    return seqs


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


def dropped_rows(batch_size: int, share: float, seed: int, micro_step: int) -> np.ndarray:
    """Which rows of (1-based) micro-batch ``micro_step`` leave the dropped modality out: each with
    probability ``share``, a pure function of (seed, micro_step) like the batch order."""
    return np.random.default_rng([seed, 2, micro_step]).random(batch_size) < share


def collate(seqs: Sequences, idx, dropped=None):
    """Right-padded (input_ids, weights, transcript_mask) tensors of the utterances ``idx``.

    ``transcript_mask`` marks target positions of transcript tokens and ``</s>``. ``dropped`` (bool
    per row) takes those rows from ``seqs.dropped``."""
    import torch

    rows = [seqs.dropped if dropped is not None and dropped[r] else seqs for r in range(len(idx))]
    width = max(int(src.lengths[i]) for src, i in zip(rows, idx))
    ids = np.full((len(idx), width), seqs.pad, dtype=np.int64)
    w = np.zeros((len(idx), width), dtype=np.float32)
    text = np.zeros((len(idx), width), dtype=bool)
    for row, (src, i) in enumerate(zip(rows, idx)):
        n = src.lengths[i]
        ids[row, :n] = src.ids[i]
        w[row, :n] = src.weights[i]
        text[row, src.text_start[i] : n] = True
    return torch.from_numpy(ids), torch.from_numpy(w), torch.from_numpy(text)
