"""Lip units (encoder ``pixel_kmeans``): downsampled mouth pixels or their 2-D DCT, k-means.

``features: pixels`` (default): each uint8 mouth frame (88 x 88) is area-averaged to
``downsample`` x ``downsample`` pixels (adaptive average pooling; 88 -> 22 averages 4 x 4 blocks),
scaled to [0, 1] and flattened.

``features: dct``: a small fixed transform, as in classic lip-reading front ends: the orthonormal
2-D DCT-II of the whole frame (pixels / 255), of which the ``dct_size`` x ``dct_size``
lowest-frequency coefficients are kept (top-left block, row by row; default 8 -> 64 values). The DC
coefficient (mean brightness, which mostly tells speakers' skin apart) is kept like the rest.

With ``frame_stack`` k (default 1), k consecutive frames of an utterance are concatenated into one
feature (k x the frame's values; the last group padded with copies of the last frame), as
``mfcc_kmeans`` stacks audio frames: one unit per k frames (25 / k Hz), each unit seeing the
mouth's motion over k / 25 s. Lip blocks get k times shorter, which is what a 2-core preset needs.

The codebook is fitted on up to ``fit_frames`` (stacked) frames drawn deterministically (seed) from
all frames of the split; each utterance's frames are encoded to one unit per (stacked) frame, with
consecutive repeats merged when ``collapse_repeats`` is set.
"""

from __future__ import annotations

import os

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import (
    Codebook,
    kept_units,
    load_ragged,
    positive_int,
    progress,
    require,
    sample_indices,
    stack_frames,
)

ENCODER = "pixel_kmeans"
CHUNK_FRAMES = 4096
FEATURES = ("pixels", "dct")
DEFAULT_DCT_SIZE = 8


def frame_features(frames: np.ndarray, downsample: int) -> np.ndarray:
    """uint8 frames (T, H, W) -> float32 rows (T, downsample * downsample) in [0, 1]."""
    import torch

    frames = np.asarray(frames)
    if len(frames) == 0:
        return np.zeros((0, downsample * downsample), dtype=np.float32)
    x = torch.from_numpy(frames.astype(np.float32)).unsqueeze(1) / 255.0  # a writable copy
    with torch.no_grad():
        y = torch.nn.functional.adaptive_avg_pool2d(x, (downsample, downsample))
    return y.reshape(len(frames), -1).numpy()


def dct_matrix(n: int, k: int) -> np.ndarray:
    """The first ``k`` rows of the orthonormal DCT-II matrix of size ``n`` (float64, (k, n))."""
    i = np.arange(n, dtype=np.float64)
    rows = np.cos(np.pi * (i[None, :] + 0.5) * np.arange(k, dtype=np.float64)[:, None] / n)
    rows *= np.sqrt(2.0 / n)
    rows[0] /= np.sqrt(2.0)
    return rows


def dct_features(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 frames (T, H, W) -> float32 rows (T, size * size): low-frequency 2-D DCT-II block."""
    import torch

    frames = np.asarray(frames)
    if len(frames) == 0:
        return np.zeros((0, size * size), dtype=np.float32)
    h, w = frames.shape[1:]
    bh = torch.from_numpy(dct_matrix(h, size))
    bw = torch.from_numpy(dct_matrix(w, size))
    x = torch.from_numpy(frames.astype(np.float64)) / 255.0
    with torch.no_grad():
        y = bh @ x @ bw.T  # (T, size, size)
    return y.reshape(len(frames), -1).numpy().astype(np.float32)


class _Features:
    """The configured feature function: uint8 frames (T, H, W) -> float32 rows (T, dim)."""

    def __init__(self, settings: dict, frames):
        kind = settings.get("features", "pixels")
        if kind not in FEATURES:
            raise DmlmError(f"tokens.lips.features: unknown features {kind!r} (known: {', '.join(FEATURES)})")
        self.kind = kind
        h, w = frames.data.shape[1:]
        if kind == "pixels":
            self.size = downsample_size(settings, frames)
        else:
            self.size = positive_int(settings, "dct_size", "lips") if "dct_size" in settings else DEFAULT_DCT_SIZE
            if self.size > min(h, w):
                raise DmlmError(f"tokens.lips.dct_size: {self.size} exceeds the frame size {h}x{w} of {frames.source}")
        self.stack = positive_int(settings, "frame_stack", "lips") if "frame_stack" in settings else 1
        self.dim = self.size * self.size * self.stack

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """One utterance's frames -> its (stacked) feature rows."""
        features = frame_features if self.kind == "pixels" else dct_features
        return stack_frames(features(frames, self.size), self.stack)

    def row_offsets(self, frames) -> np.ndarray:
        """Offsets of each utterance's feature rows (it gives ceil(T / frame_stack) of them)."""
        return np.concatenate([[0], np.cumsum(-(-np.diff(frames.offsets) // self.stack))])

    def chunks(self, frames, label: str):
        """(first item, stacked rows of its group of utterances) over ``utterance_groups``: stacking
        never crosses an utterance."""
        for first, utterances in utterance_groups(frames, label):
            yield first, np.concatenate([self(u) for u in utterances])


def utterance_groups(frames, label: str):
    """(first item, uint8 frames of each utterance of the group) over groups of whole utterances of
    at most CHUNK_FRAMES frames each (one utterance where it alone is longer): bounded memory."""
    starts = [0]
    for i in range(1, len(frames)):
        if frames.offsets[i + 1] - frames.offsets[starts[-1]] > CHUNK_FRAMES:  # adding item i overflows
            starts.append(i)
    for a, b in progress(list(zip(starts, [*starts[1:], len(frames)])), label):
        span = frames.read_rows(int(frames.offsets[a]), int(frames.offsets[b]))  # read, don't map
        base = frames.offsets[a]
        yield a, [span[frames.offsets[i] - base : frames.offsets[i + 1] - base] for i in range(a, b)]


def load_frames(media_path: str | os.PathLike):
    frames = load_ragged(media_path, "lips")
    if frames.data.ndim != 3 or frames.data.dtype != np.uint8:
        raise DmlmError(
            f"{frames.source}: expected uint8 frames of shape (T, H, W), got {frames.data.dtype} {frames.data.shape}"
        )
    if len(frames.data) == 0:
        raise DmlmError(f"{frames.source}: holds no frames")
    return frames


def downsample_size(settings: dict, frames) -> int:
    """``downsample`` of the settings, checked against the frames' size."""
    d = positive_int(settings, "downsample", "lips")
    h, w = frames.data.shape[1:]
    if d > min(h, w):
        raise DmlmError(f"tokens.lips.downsample: {d} exceeds the frame size {h}x{w} of {frames.source}")
    return d


def check_settings(settings: dict) -> None:
    """Validate the settings that do not need the frames (the sizes are checked against the
    frames by fit and encode)."""
    positive_int(settings, "n_units", "lips")
    positive_int(settings, "fit_frames", "lips")
    kind = settings.get("features", "pixels")
    if kind not in FEATURES:
        raise DmlmError(f"tokens.lips.features: unknown features {kind!r} (known: {', '.join(FEATURES)})")
    if kind == "pixels":
        positive_int(settings, "downsample", "lips")
    elif "dct_size" in settings:
        positive_int(settings, "dct_size", "lips")
    if "frame_stack" in settings:
        positive_int(settings, "frame_stack", "lips")


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Fit the lip codebook on up to ``fit_frames`` frames of the ragged frame array at ``media_path``."""
    positive_int(settings, "n_units", "lips")
    n_fit = positive_int(settings, "fit_frames", "lips")
    seed = int(require(settings, "seed", "lips"))
    frames = load_frames(media_path)
    extract = _Features(settings, frames)
    row_offsets = extract.row_offsets(frames)
    chosen = sample_indices(int(row_offsets[-1]), n_fit, seed)  # sorted
    rows = []
    for first, feats in extract.chunks(frames, "lip features (fit)"):
        start = row_offsets[first]
        picked = chosen[(chosen >= start) & (chosen < start + len(feats))]
        rows.append(feats[picked - start])
    return Codebook.fit(np.concatenate(rows), {**settings, "features": extract.kind}, "lips")


def encode(codebook: Codebook, media_path: str | os.PathLike, return_frames: bool = False):
    """int32 unit ids per utterance of the ragged frame array at ``media_path``; with
    ``return_frames`` also each kept unit's frame index (``codebook.kept_units``)."""
    frames = load_frames(media_path)
    extract = _Features(codebook.settings, frames)
    if extract.dim != codebook.dim:
        raise DmlmError(f"lips codebook has {codebook.dim}-dim centroids, features have {extract.dim}")
    collapse = bool(codebook.settings.get("collapse_repeats", False))
    # encode groups of whole utterances, then cut per utterance
    row_offsets = extract.row_offsets(frames)
    ids = np.empty(int(row_offsets[-1]), dtype=np.int32)
    for first, feats in extract.chunks(frames, "lip tokens"):
        ids[row_offsets[first] : row_offsets[first] + len(feats)] = codebook.encode(feats)
    out, kept = [], []
    for i in range(len(frames)):
        item = ids[row_offsets[i] : row_offsets[i + 1]]
        kept.append(kept_units(item, collapse))
        out.append(item[kept[-1]])
    return (out, kept) if return_frames else out


def describe(codebook: Codebook) -> dict:
    """Vocabulary size and the nominal unit rate (one unit per ``frame_stack`` video frames; ``fps``
    from the settings, default 25 Hz; with ``collapse_repeats`` units come at most this often)."""
    fps = float(codebook.settings.get("fps", 25))
    return {"vocab_size": codebook.n_units, "frame_rate": fps / int(codebook.settings.get("frame_stack", 1))}
