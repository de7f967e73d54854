"""Lip units (encoder ``pixel_kmeans``): downsampled mouth pixels, k-means.

Each uint8 mouth frame (88 x 88) is area-averaged to ``downsample`` x ``downsample`` pixels
(adaptive average pooling; 88 -> 22 averages 4 x 4 blocks), scaled to [0, 1] and flattened.
The codebook is fitted on up to ``fit_frames`` frames drawn deterministically (seed) from all
frames of the split; each utterance's frames are encoded to one unit per frame (25 Hz), with
consecutive repeats merged when ``collapse_repeats`` is set.
"""

from __future__ import annotations

import os

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import (
    Codebook,
    collapse_repeats,
    load_ragged,
    positive_int,
    progress,
    require,
    sample_indices,
)

ENCODER = "pixel_kmeans"
CHUNK_FRAMES = 4096


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


def load_frames(media_path: str | os.PathLike):
    frames = load_ragged(media_path, "lips")
    if frames.data.ndim != 3 or frames.data.dtype != np.uint8:
        raise DmlmError(
            f"{frames.source}: expected uint8 frames of shape (T, H, W), got {frames.data.dtype} {frames.data.shape}"
        )
    if len(frames.data) == 0:
        raise DmlmError(f"{frames.source}: holds no frames")
    return frames


def _downsample(settings: dict, frames) -> int:
    d = positive_int(settings, "downsample", "lips")
    h, w = frames.data.shape[1:]
    if d > min(h, w):
        raise DmlmError(f"tokens.lips.downsample: {d} exceeds the frame size {h}x{w} of {frames.source}")
    return d


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Fit the lip codebook on up to ``fit_frames`` frames of the ragged frame array at ``media_path``."""
    positive_int(settings, "n_units", "lips")
    n_fit = positive_int(settings, "fit_frames", "lips")
    seed = int(require(settings, "seed", "lips"))
    frames = load_frames(media_path)
    d = _downsample(settings, frames)
    chosen = sample_indices(len(frames.data), n_fit, seed)
    chunks = range(0, len(chosen), CHUNK_FRAMES)
    rows = [
        frame_features(frames.data[chosen[s : s + CHUNK_FRAMES]], d)
        for s in progress(chunks, "lip features (fit)")
    ]
    return Codebook.fit(np.concatenate(rows), settings, "lips")


def encode(codebook: Codebook, media_path: str | os.PathLike) -> list[np.ndarray]:
    """int32 unit ids per utterance of the ragged frame array at ``media_path``."""
    frames = load_frames(media_path)
    d = _downsample(codebook.settings, frames)
    if d * d != codebook.dim:
        raise DmlmError(f"lips codebook has {codebook.dim}-dim centroids, features have {d * d}")
    collapse = bool(codebook.settings.get("collapse_repeats", False))
    # encode the concatenated frames in chunks, then cut per utterance
    ids = np.empty(len(frames.data), dtype=np.int32)
    for s in progress(range(0, len(ids), CHUNK_FRAMES), "lip tokens"):
        ids[s : s + CHUNK_FRAMES] = codebook.encode(frame_features(frames.data[s : s + CHUNK_FRAMES], d))
    out = []
    for i in range(len(frames)):
        item = ids[frames.offsets[i] : frames.offsets[i + 1]]
        out.append(collapse_repeats(item) if collapse else item.copy())
    return out
