"""Tokens stage: discrete units for audio, lips and images (k-means codebooks) and text ids.

Pipeline entry points: ``fit_codebook`` and ``encode_media`` (dispatch on modality and encoder);
text: ``dmlm.tokens.text.train_text_tokenizer`` / ``encode_table`` / ``decode``.
"""

from __future__ import annotations

import importlib
import os

from dmlm.errors import DmlmError

# modality -> {encoder name: module implementing fit(settings, media) / encode(codebook, media)}
ENCODERS = {
    "audio": {"mfcc_kmeans": "dmlm.tokens.audio"},
    "lips": {"pixel_kmeans": "dmlm.tokens.lips"},
    "image": {"patch_kmeans": "dmlm.tokens.image"},
}


def _module(modality: str, encoder):
    if modality not in ENCODERS:
        raise DmlmError(f"unknown modality {modality!r} (known: {', '.join(ENCODERS)})")
    known = ENCODERS[modality]
    if encoder not in known:
        raise DmlmError(f"tokens.{modality}.encoder: unknown encoder {encoder!r} (known: {', '.join(known)})")
    return importlib.import_module(known[encoder])


def fit_codebook(modality: str, settings: dict, media_path: str | os.PathLike, out_path: str | os.PathLike):
    """Fit the codebook of ``settings['encoder']`` on ``media_path`` and save it to ``out_path`` (.npz).

    ``settings`` is the config's ``tokens.<modality>`` plus ``seed`` (and ``sample_rate`` for
    audio). ``media_path``: ragged prefix for audio and lips, ``images.npy`` for images.
    """
    if "encoder" not in settings:
        raise DmlmError(f"tokens.{modality}.encoder: missing from the settings")
    codebook = _module(modality, settings["encoder"]).fit(settings, media_path)
    codebook.save(out_path)
    return codebook


def encode_media(
    modality: str, codebook_path: str | os.PathLike, media_path: str | os.PathLike, out_prefix: str | os.PathLike
):
    """Encode ``media_path`` with the codebook at ``codebook_path``; write ragged int32 ids at ``out_prefix``."""
    import numpy as np

    from dmlm.storage import save_ragged
    from dmlm.tokens.codebook import Codebook

    codebook = Codebook.load(codebook_path)
    fitted_for = codebook.settings.get("modality")
    if fitted_for != modality:
        raise DmlmError(f"{codebook_path}: a {fitted_for} codebook, not a {modality} one")
    ids = _module(modality, codebook.settings.get("encoder")).encode(codebook, media_path)
    save_ragged(out_prefix, ids, dtype=np.int32)
    return ids
