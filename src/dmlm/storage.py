"""On-disk formats shared by every stage: ragged arrays, tables and atomic writes.

A *ragged array* holds many variable-length items (utterances, token sequences) in two files:
``<prefix>.npy`` (all items concatenated along axis 0) and ``<prefix>.offsets.npy`` (int64, length
n_items + 1; item i is ``data[offsets[i]:offsets[i + 1]]``). Both are plain ``.npy`` files, so a
split of a million utterances is two files that memory-map, not a million small files.

Every writer here writes to a temporary name in the same folder and renames when complete, so an
interrupted job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError

DATA_SUFFIX = ".npy"
_UMASK = os.umask(0)
os.umask(_UMASK)
OFFSETS_SUFFIX = ".offsets.npy"


def ragged_paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """The two files of the ragged array at ``prefix`` (data, offsets)."""
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + DATA_SUFFIX), prefix.with_name(prefix.name + OFFSETS_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared on clusters
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_ragged(prefix: str | os.PathLike, items: Sequence[np.ndarray], dtype=None) -> None:
    """Write ``items`` (arrays that agree on every axis but the first) as one ragged array."""
    lengths = np.array([len(x) for x in items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if len(items):
        data = np.concatenate([np.asarray(x) for x in items], axis=0)
    else:
        data = np.zeros((0,), dtype=dtype or np.float32)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    data_path, offsets_path = ragged_paths(prefix)
    save_npy(data_path, data)
    save_npy(offsets_path, offsets)


def _load_npy(path: Path, mmap_mode) -> np.ndarray:
    """``np.load`` with a DmlmError naming the file when it is truncated or not a .npy file
    (numpy says "Failed to read all data" or "mmap length is greater than file size" without it)."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise DmlmError(f"{path}: not a complete .npy array (truncated or corrupt file?): {err}") from None


def _check_offsets(offsets: np.ndarray, n_rows: int, path: Path) -> None:
    """Offsets of a ragged array: 1-D integers from 0, never decreasing, ending at the data's rows."""
    if offsets.ndim != 1 or len(offsets) == 0 or not np.issubdtype(offsets.dtype, np.integer):
        raise DmlmError(f"{path}: expected a non-empty 1-D integer array of offsets, got {offsets.dtype} {offsets.shape}")
    if offsets[0] != 0:
        raise DmlmError(f"{path}: offsets must start at 0, got {int(offsets[0])}")
    if np.any(np.diff(offsets) < 0):
        bad = int(np.flatnonzero(np.diff(offsets) < 0)[0])
        raise DmlmError(f"{path}: offsets decrease at item {bad} ({int(offsets[bad])} -> {int(offsets[bad + 1])})")
    if offsets[-1] != n_rows:
        raise DmlmError(f"{path}: offsets must end at {n_rows}, the rows of its data file, "
                        f"got {int(offsets[-1])} (one of the two files is truncated or stale)")


class Ragged(Sequence):
    """Read access to a ragged array; ``ragged[i]`` is a (memory-mapped) view of item i."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, source: str = "<memory>"):
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(data):
            raise ValueError(f"{source}: offsets do not match the data ({len(data)} rows)")
        self.data, self.offsets, self.source = data, offsets, source

    @classmethod
    def load(cls, prefix: str | os.PathLike, mmap: bool = True) -> "Ragged":
        data_path, offsets_path = ragged_paths(prefix)
        for p in (data_path, offsets_path):
            if not p.exists():
                raise FileNotFoundError(f"ragged array file missing: {p}")
        data = _load_npy(data_path, "r" if mmap else None)
        offsets = _load_npy(offsets_path, None)
        _check_offsets(offsets, len(data), offsets_path)
        return cls(data, offsets, source=str(data_path))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {self.source} ({len(self)} items)")
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of the concatenated data, read from the file instead of through
        the memory map: scanning a large array (3 GB of lip frames) then does not leave it all
        resident in the job's memory."""
        data = self.data
        if not isinstance(data, np.memmap):
            return np.asarray(data[start:stop])
        row = int(np.prod(data.shape[1:], dtype=np.int64))
        flat = np.fromfile(data.filename, dtype=data.dtype, count=(stop - start) * row,
                           offset=data.offset + start * row * data.itemsize)
        return flat.reshape((stop - start, *data.shape[1:]))


def write_table(path: str | os.PathLike, rows: pd.DataFrame | Iterable[dict]) -> None:
    """Write a tab-separated table atomically (``.csv`` paths get commas)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    sep = "," if str(path).endswith(".csv") else "\t"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=sep, index=False)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table missing: {path}")
    sep = "," if path.suffix == ".csv" else "\t"
    # keep_default_na=False: an empty OCR string stays "" instead of becoming NaN
    return pd.read_csv(path, sep=sep, keep_default_na=False, dtype={"id": str})


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"JSON file missing: {path}")
    return json.loads(path.read_text())
