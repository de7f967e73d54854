"""SHA-256 checks of the weights files a stage reads, so that changed bytes stop it with an error
instead of giving silently wrong results (a flipped byte inside a tensor still loads).

- Files we write (``checkpoint.pt``, the training state ``state/last.pt``) get a sidecar
  ``<file>.sha256`` in ``sha256sum`` format (``sha256sum -c`` reads it), written after the file;
  :func:`verify` checks it before every load.
- Weights we did not write (a pretrained backbone folder, CRAFT and Whisper weights) have no
  sidecar to trust: :func:`check_external` records each file's SHA-256 at its first use in a
  records folder (``$DMLM_WEIGHTS_RECORDS``, default ``results/weights-sha256`` under the working
  directory, i.e. beside the results that used them) and refuses any later use when the bytes
  differ. Deleting the record accepts the new file.

Hashes are computed at every use, not cached by size and mtime: bit rot changes neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from dmlm.errors import DmlmError
from dmlm.storage import atomic_path

SUFFIX = ".sha256"
RECORDS_ENV = "DMLM_WEIGHTS_RECORDS"
DEFAULT_RECORDS = Path("results") / "weights-sha256"
_CHUNK = 1 << 20


class ChecksumMissing(DmlmError):
    """A file we wrote has no sidecar (written before checksums were kept, or interrupted)."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


@contextlib.contextmanager
def checksummed_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like ``storage.atomic_path``, and writes ``<path>.sha256`` of what was written.

    The old sidecar goes first: a crash between the two renames leaves a file without a sidecar
    (reported as such), never a new file beside an old sidecar (reported as corrupt)."""
    path = Path(path)
    side = sidecar(path)
    side.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        yield tmp
        digest = sha256_file(tmp)
    with atomic_path(side) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through ``checksummed_path``, into a file object: saved to a path, torch names
    the archive's records after the (random) temporary file, so one run would write other bytes."""
    import torch

    with checksummed_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def verify(path: str | os.PathLike) -> None:
    """Raise DmlmError unless ``path`` still has the SHA-256 its sidecar recorded when written."""
    path = Path(path)
    side = sidecar(path)
    if not side.is_file():
        raise ChecksumMissing(
            f"{path}: no checksum file {side.name} beside it (written before checksums were kept, or its "
            f"writing was interrupted), so its bytes cannot be checked; make it again, or, if you trust it, "
            f"accept it with `sha256sum {path.name} > {side.name}` in {path.parent}"
        )
    try:
        expected = side.read_text().split()[0].lower()
    except (OSError, IndexError) as err:
        raise DmlmError(f"{side}: unreadable checksum file ({err}); make {path} again") from None
    actual = sha256_file(path)
    if actual != expected:
        raise DmlmError(
            f"{path}: SHA-256 {actual} does not match {side.name} ({expected}): the file changed after it "
            f"was written (a damaged copy, a disk error or an edit); make it again"
        )


# ------------------------------------------------------------------------- weights we did not write
def weights_files(path: str | os.PathLike) -> list[Path]:
    """The files a weights path stands for: the file itself, or every file under a folder (hidden
    names, e.g. a hub cache's lock files, left out). Snakemake declares the same list as inputs."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def records_dir() -> Path:
    return Path(os.environ.get(RECORDS_ENV) or DEFAULT_RECORDS)


def _record_path(records: Path, path: Path) -> Path:
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return records / f"{path.name}-{key}.json"


def check_external(path: str | os.PathLike, key: str, records: str | os.PathLike | None = None) -> None:
    """Record the SHA-256 of each file of the weights at ``path`` at its first use; raise
    DmlmError naming the file (and the config ``key`` that names the weights) when a recorded file's
    bytes changed since."""
    records = Path(records) if records is not None else records_dir()
    for file in weights_files(path):
        file = file.resolve()
        record = _record_path(records, file)
        actual = sha256_file(file)
        if record.exists():
            try:
                expected = json.loads(record.read_text())["sha256"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise DmlmError(f"{key}: the checksum record {record} of {file} is unreadable ({err}); "
                                f"delete it to record the file again") from None
            if actual != expected:
                raise DmlmError(
                    f"{key}: {file} changed since its first use: SHA-256 {actual}, recorded {expected} in "
                    f"{record}. Results made with the old file would mix with new ones. Restore the old "
                    f"file, or, if the new one is meant, delete {record} to accept it (Snakemake reruns "
                    f"the jobs that read it: the file is their input)"
                )
            continue
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"path": str(file), "sha256": actual, "size": file.stat().st_size}) + "\n")
