"""Lip units from a trained lip reader (encoder ``lip_reader``): a small CNN that names each frame's
viseme, trained once on the training split, then frozen; its predicted visemes are the units.

It sits between the k-means pixel units, which keep little of the mouth shape (normalised mutual
information 0.33-0.39 with the renderer's visemes, ``bench/bench_lip_units.py``), and the viseme
oracle, which does not look at the frames at all. Like a real lip-reading front end trained on
labelled video (the paper's units come from AV-HuBERT, trained on LRS3), it learns from labels of
the *training split* only: the viseme of each training frame, from the phoneme timing the video was
rendered from (:mod:`dmlm.tokens.visemes`). Every split is then encoded from its pixels alone.

Input of a frame: the frame and ``context`` frames on each side (an utterance's first and last
frames repeated at its ends), each area-averaged to ``downsample`` x ``downsample`` pixels in
[0, 1] as ``pixel_kmeans`` does, minus the utterance's mean frame (it holds the speaker's look and
the lighting, not the articulation). Network: two 3x3 convolutions (``width`` and 2 x ``width``
channels, each with ReLU and 2x2 max-pooling), a hidden layer of 128, one logit per viseme; Adam
(lr 1e-3), batches of 256, ``epochs`` passes over ``fit_frames`` frames drawn with the seed.
Units: the most likely viseme of each frame; ``frame_stack`` (the most frequent of k frames) and
``collapse_repeats`` as the oracle, whose vocabulary (15 visemes) it shares, so the two are
compared unit for unit.

The codebook file keeps the network's weights beside the usual centroids (the viseme ids). Training
and encoding run on one thread whatever the job's thread count: float sums in another order give
other weights (tests/test_lip_reader.py fits on 1 and on 2 threads), and the same config and seed
must give the same tokens.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import Codebook, kept_units, positive_int, progress, require, sample_indices
from dmlm.tokens.lips import downsample_size, frame_features, load_frames, utterance_groups
from dmlm.tokens.visemes import DEFAULT_FPS, describe, frame_stack, frame_visemes, read_events, stacked_mode

__all__ = ["ENCODER", "check_settings", "fit", "encode", "describe"]

ENCODER = "lip_reader"
DEFAULTS = {"context": 2, "width": 16, "epochs": 8}
BATCH = 256
LEARNING_RATE = 1e-3
HIDDEN = 128


@contextmanager
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _setting(settings: dict, key: str) -> int:
    if key not in settings:
        return DEFAULTS[key]
    if key == "context":  # 0 is allowed: the frame alone
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DmlmError(f"tokens.lips.context: expected an integer >= 0, got {value!r}")
        return int(value)
    return positive_int(settings, key, "lips")


def _network(n_frames: int, size: int, width: int, n_classes: int):
    from torch import nn

    pooled = size // 4  # >= 1: check_settings asks for downsample >= 4
    return nn.Sequential(
        nn.Conv2d(n_frames, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * pooled * pooled, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_classes),
    )


def _utterance_features(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 frames (T, H, W) of one utterance -> float32 (T, size, size), minus its mean frame."""
    x = frame_features(frames, size).reshape(len(frames), size, size)
    return x - x.mean(axis=0, keepdims=True)


def _windows(x: np.ndarray, context: int, at: np.ndarray | None = None) -> np.ndarray:
    """(T, s, s) -> (len(at), 2 * context + 1, s, s): each chosen frame with its neighbours."""
    at = np.arange(len(x)) if at is None else at
    shifts = np.arange(-context, context + 1)
    return x[np.clip(at[:, None] + shifts[None, :], 0, len(x) - 1)]


def _chunks(frames, size: int, label: str):
    """(first utterance, each utterance's features) over ``utterance_groups``: bounded memory."""
    for first, utterances in utterance_groups(frames, label):
        yield first, [_utterance_features(u, size) for u in utterances]


def check_settings(settings: dict) -> None:
    positive_int(settings, "fit_frames", "lips")
    if positive_int(settings, "downsample", "lips") < 4:
        raise DmlmError("tokens.lips.downsample: the lip reader needs at least 4 pixels a side")
    for key in DEFAULTS:
        _setting(settings, key)
    frame_stack(settings)


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Train the lip reader on up to ``fit_frames`` frames of the split at ``media_path``,
    labelled with the visemes of the manifest's phoneme timing beside it."""
    import torch

    from dmlm.corpus.lips import VISEMES

    check_settings(settings)
    n_fit = positive_int(settings, "fit_frames", "lips")
    seed = int(require(settings, "seed", "lips"))
    context, width, epochs = (_setting(settings, key) for key in ("context", "width", "epochs"))
    fps = float(settings.get("fps", DEFAULT_FPS))
    frames = load_frames(media_path)
    size = downsample_size(settings, frames)
    events, offsets = read_events(media_path)
    chosen = sample_indices(int(offsets[-1]), n_fit, seed)  # sorted frame indices
    bounds = np.searchsorted(chosen, offsets)  # chosen[bounds[i]:bounds[i + 1]] lie in utterance i
    inputs = np.empty((len(chosen), 2 * context + 1, size, size), dtype=np.float32)  # filled in place
    labels = np.empty(len(chosen), dtype=np.int64)
    for first, utterances in _chunks(frames, size, "lip reader inputs (fit)"):
        for i, x in enumerate(utterances, start=first):
            a, b = bounds[i], bounds[i + 1]
            picked = chosen[a:b] - offsets[i]
            inputs[a:b] = _windows(x, context, picked)
            labels[a:b] = frame_visemes(events[i], len(x), fps)[picked]
    x, y = torch.from_numpy(inputs), torch.from_numpy(labels)
    with _one_thread():
        weights = _train(x, y, 2 * context + 1, size, width, epochs, seed)
    ids = np.arange(len(VISEMES), dtype=np.float32)[:, None]  # the units are the visemes
    return Codebook(ids, {**settings, "modality": "lips", **{k: _setting(settings, k) for k in DEFAULTS}}, weights)


def _train(x, y, n_frames: int, size: int, width: int, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """The network trained on inputs ``x`` and viseme labels ``y``; its weights by name."""
    import torch

    from dmlm.corpus.lips import VISEMES

    torch.manual_seed(seed)
    net = _network(n_frames, size, width, len(VISEMES))
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    order = torch.Generator().manual_seed(seed)
    print(f"[tokens] training the lip reader on {len(y)} frames ({n_frames} x {size}x{size} inputs), "
          f"{epochs} epochs", file=sys.stderr)
    for epoch in progress(range(epochs), "lip reader (epochs)"):
        net.train()
        total, correct = 0.0, 0
        for batch in torch.randperm(len(y), generator=order).split(BATCH):
            logits = net(x[batch])
            loss = torch.nn.functional.cross_entropy(logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
        print(f"[tokens] lip reader epoch {epoch + 1}: loss {total / len(y):.3f}, "
              f"training accuracy {correct / len(y):.3f}", file=sys.stderr)
    return {name: value.detach().numpy().copy() for name, value in net.state_dict().items()}


def _load_network(codebook: Codebook, size: int):
    import torch

    s = codebook.settings
    net = _network(2 * int(s["context"]) + 1, size, int(s["width"]), codebook.n_units)
    try:
        net.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in codebook.arrays.items()})
    except RuntimeError as err:  # missing or misshapen weights: a codebook of another encoder or version
        raise DmlmError(f"lip reader codebook: its weights do not fit the network ({err}); fit it again") from None
    return net.eval()


def encode(codebook: Codebook, media_path: str | os.PathLike, return_frames: bool = False):
    """int32 viseme ids per utterance, predicted from the frames; with ``return_frames`` also each
    kept unit's (stacked) frame index."""
    import torch

    frames = load_frames(media_path)
    size = downsample_size(codebook.settings, frames)
    net = _load_network(codebook, size)
    context = int(codebook.settings["context"])
    k, collapse = frame_stack(codebook.settings), bool(codebook.settings.get("collapse_repeats", False))
    out, kept = [], []
    with torch.no_grad(), _one_thread():
        for _, utterances in _chunks(frames, size, "lip reader tokens"):
            for x in utterances:
                ids = net(torch.from_numpy(_windows(x, context))).argmax(1).numpy().astype(np.int32)
                item = stacked_mode(ids, k)
                kept.append(kept_units(item, collapse))
                out.append(item[kept[-1]])
    return (out, kept) if return_frames else out
