"""The shared k-means codebook behind every discrete media tokenizer (audio, lips, image).

A codebook is ``n_units`` centroids fitted with scikit-learn's MiniBatchKMeans on feature rows;
a feature row's unit id is the index of its nearest centroid (squared Euclidean distance). The
``.npz`` file holds ``centroids`` (float32, ``(n_units, dim)``) and ``settings`` (a JSON string:
the stage settings the codebook was fitted with plus ``modality``), so that encoding needs no
settings of its own.

Helpers shared by the modality modules (deterministic subsets, loading inputs with errors that
name the file, collapsing repeats, progress bars) live here too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, atomic_path, ragged_paths

N_INIT = 3  # k-means++ restarts (fixed: results must not depend on a library default)
BATCH_SIZE = 4096  # MiniBatchKMeans batch size
MAX_ITER = 100
ENCODE_BATCH = 16384  # rows per distance matrix when encoding
ARRAY_PREFIX = "array:"  # .npz keys of a trained encoder's arrays


def require(settings: dict, key: str, modality: str):
    """``settings[key]``, or a DmlmError naming the config key ``tokens.<modality>.<key>``."""
    if key not in settings:
        raise DmlmError(f"tokens.{modality}.{key}: missing from the settings ({sorted(settings)})")
    return settings[key]


def positive_int(settings: dict, key: str, modality: str) -> int:
    value = require(settings, key, modality)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DmlmError(f"tokens.{modality}.{key}: expected a positive integer, got {value!r}")
    return int(value)


def sample_indices(n: int, k: int, seed: int) -> np.ndarray:
    """A deterministic sorted subset of ``min(k, n)`` indices out of ``range(n)``."""
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def kept_units(ids: np.ndarray, collapse: bool) -> np.ndarray:
    """Frame index (int64) of each unit that survives: all, or with ``collapse`` the first of each
    run of equal ids (``[3, 3, 5, 3, 3] -> [0, 2, 3]``). A unit's time is its frame index over the
    encoder's frame rate (token times for interleaved sequences, ``dmlm.model.sequence``)."""
    ids = np.asarray(ids)
    if not collapse or len(ids) == 0:
        return np.arange(len(ids), dtype=np.int64)
    keep = np.empty(len(ids), dtype=bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return np.flatnonzero(keep)


def collapse_repeats(ids: np.ndarray) -> np.ndarray:
    """Drop every id equal to its predecessor: ``[3, 3, 5, 3, 3] -> [3, 5, 3]``."""
    ids = np.asarray(ids)
    return ids[kept_units(ids, True)]


def stack_frames(features: np.ndarray, k: int) -> np.ndarray:
    """Concatenate k consecutive frames (rows) into one, padding the last group with copies of
    the last frame: (T, d) -> (ceil(T / k), k * d). Units then come at 1/k of the frame rate."""
    if k <= 1:
        return features
    pad = (-len(features)) % k
    if pad:
        features = np.concatenate([features, np.repeat(features[-1:], pad, axis=0)])
    return features.reshape(len(features) // k, k * features.shape[1])


def load_ragged(prefix: str | os.PathLike, what: str) -> Ragged:
    """``Ragged.load(prefix)`` with a DmlmError naming the missing or broken file."""
    data_path, _ = ragged_paths(prefix)
    try:
        ragged = Ragged.load(prefix)
    except FileNotFoundError as err:
        raise DmlmError(f"{what}: {err}") from None
    except ValueError as err:
        raise DmlmError(f"{what}: {data_path}: {err}") from None
    if len(ragged) == 0:
        raise DmlmError(f"{what}: {data_path} holds no items")
    return ragged


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar on stderr (Snakemake sends stderr to the rule's log)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=5.0, disable=False)


def _threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        return 1


class Codebook:
    """``n_units`` centroids plus the settings they were fitted with; ``arrays``: named arrays a
    trained encoder keeps beside them (its network weights), saved as ``array:<name>``."""

    def __init__(self, centroids: np.ndarray, settings: dict, arrays: dict[str, np.ndarray] | None = None):
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must be a non-empty 2-D array, got shape {centroids.shape}")
        self.centroids = centroids
        self.settings = dict(settings)
        self.arrays = {name: np.asarray(value) for name, value in (arrays or {}).items()}
        self._torch_centroids = None

    @property
    def n_units(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def fit(cls, features: np.ndarray, settings: dict, modality: str) -> "Codebook":
        """Fit ``settings['n_units']`` centroids on the rows of ``features`` (seed ``settings['seed']``)."""
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits

        n_units = positive_int(settings, "n_units", modality)
        seed = int(require(settings, "seed", modality))
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise DmlmError(f"tokens.{modality}: feature rows must be 2-D, got {features.shape}")
        if len(features) < n_units:
            raise DmlmError(
                f"tokens.{modality}.n_units: {n_units} units need at least as many feature rows, "
                f"but the fitting data gave only {len(features)}"
            )
        kmeans = MiniBatchKMeans(
            n_clusters=n_units,
            random_state=seed,
            n_init=N_INIT,
            batch_size=BATCH_SIZE,
            max_iter=MAX_ITER,
        )
        print(
            f"[tokens] fitting {n_units} {modality} units on {len(features)} rows x {features.shape[1]} dims",
            file=sys.stderr,
        )
        with threadpool_limits(limits=_threads()):
            kmeans.fit(features)
        return cls(kmeans.cluster_centers_.astype(np.float32), {**settings, "modality": modality})

    def save(self, path: str | os.PathLike) -> None:
        settings_json = json.dumps(self.settings, sort_keys=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, centroids=self.centroids, settings=np.array(settings_json),
                         **{f"{ARRAY_PREFIX}{name}": value for name, value in self.arrays.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Codebook":
        path = Path(path)
        if not path.exists():
            raise DmlmError(f"codebook file missing: {path}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                centroids = npz["centroids"]
                settings = json.loads(str(npz["settings"]))
                arrays = {key[len(ARRAY_PREFIX):]: npz[key] for key in npz.files if key.startswith(ARRAY_PREFIX)}
        except (KeyError, ValueError, OSError) as err:
            raise DmlmError(f"{path}: not a codebook file ({err})") from None
        if centroids.ndim != 2 or len(centroids) == 0:
            raise DmlmError(f"{path}: centroids have shape {centroids.shape}, expected (n_units, dim)")
        return cls(centroids, settings, arrays)

    def encode(self, features: np.ndarray) -> np.ndarray:
        """int32 id of the nearest centroid for each row of ``features`` ((n, dim) -> (n,))."""
        import torch

        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features of shape {features.shape} do not match codebook dim {self.dim}")
        if len(features) == 0:
            return np.zeros(0, dtype=np.int32)
        if self._torch_centroids is None:
            # float64 distances: identical rows get identical ids whatever batch they sit in
            c = torch.from_numpy(self.centroids.astype(np.float64))
            self._torch_centroids = (c, (c * c).sum(1))
        c, c_sq = self._torch_centroids
        out = np.empty(len(features), dtype=np.int32)
        for start in range(0, len(features), ENCODE_BATCH):
            x = torch.from_numpy(np.asarray(features[start : start + ENCODE_BATCH], dtype=np.float64))
            # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every centroid
            dist = c_sq[None, :] - 2.0 * (x @ c.T)
            out[start : start + len(x)] = dist.argmin(1).numpy()
        return out
