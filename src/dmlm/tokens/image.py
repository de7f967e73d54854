"""Image units (encoder ``patch_kmeans``): k-means over non-overlapping pixel patches.

Each grayscale image (H x W, uint8) is cropped to a multiple of ``patch`` in both directions and
cut into ``(H // patch) * (W // patch)`` patches; a patch's feature is its pixels / 255,
flattened. The codebook is fitted on all patches of up to ``fit_images`` images drawn
deterministically (seed); an image's tokens are its patch ids in raster order (row by row).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import Codebook, positive_int, progress, require, sample_indices

ENCODER = "patch_kmeans"
CHUNK_IMAGES = 128


def patch_features(images: np.ndarray, patch: int) -> np.ndarray:
    """uint8 images (N, H, W) -> float32 (N, (H//p) * (W//p), p * p), patches in raster order."""
    images = np.asarray(images)
    n, h, w = images.shape
    nh, nw = h // patch, w // patch
    x = images[:, : nh * patch, : nw * patch].reshape(n, nh, patch, nw, patch)
    x = x.transpose(0, 1, 3, 2, 4).reshape(n, nh * nw, patch * patch)
    return x.astype(np.float32) / np.float32(255.0)


def load_images(media_path: str | os.PathLike) -> np.ndarray:
    path = Path(media_path)
    if not path.exists():
        raise DmlmError(f"image array file missing: {path}")
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DmlmError(f"{path}: not a .npy array ({err})") from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DmlmError(f"{path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise DmlmError(f"{path}: holds no images")
    return images


def patch_size(settings: dict, images: np.ndarray, path) -> int:
    """``tokens.image.patch``, checked against the image size (patches and CRAFT features alike)."""
    p = positive_int(settings, "patch", "image")
    if p > min(images.shape[1:]):
        raise DmlmError(f"tokens.image.patch: {p} exceeds the image size {images.shape[1:]} of {path}")
    return p


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Fit the patch codebook on the patches of up to ``fit_images`` images of ``media_path`` (.npy)."""
    positive_int(settings, "n_units", "image")
    n_fit = positive_int(settings, "fit_images", "image")
    seed = int(require(settings, "seed", "image"))
    images = load_images(media_path)
    p = patch_size(settings, images, media_path)
    chosen = sample_indices(len(images), n_fit, seed)
    rows = [
        patch_features(images[chosen[s : s + CHUNK_IMAGES]], p).reshape(-1, p * p)
        for s in progress(range(0, len(chosen), CHUNK_IMAGES), "image patches (fit)")
    ]
    return Codebook.fit(np.concatenate(rows), settings, "image")


def encode(codebook: Codebook, media_path: str | os.PathLike) -> list[np.ndarray]:
    """int32 patch ids (raster order) per image of ``media_path`` (.npy)."""
    images = load_images(media_path)
    p = patch_size(codebook.settings, images, media_path)
    if p * p != codebook.dim:
        raise DmlmError(f"image codebook has {codebook.dim}-dim centroids, patches have {p * p}")
    out = []
    for s in progress(range(0, len(images), CHUNK_IMAGES), "image tokens"):
        feats = patch_features(images[s : s + CHUNK_IMAGES], p)
        ids = codebook.encode(feats.reshape(-1, p * p)).reshape(len(feats), -1)
        out.extend(ids)
    return out


def describe(codebook: Codebook) -> dict:
    return {"vocab_size": codebook.n_units, "frame_rate": None}
