"""The encoder registry and the pipeline entry points that dispatch through it (see the
package docstring, ``dmlm.tokens``)."""


from __future__ import annotations

import importlib
import os

from dmlm.errors import DmlmError

# modality -> {encoder name: module implementing fit(settings, media) / encode(codebook, media)}
ENCODERS = {
    "audio": {
        "mfcc_kmeans": "dmlm.tokens.audio",
        "logmel_kmeans": "dmlm.tokens.audio",
        "whisper_kmeans": "dmlm.tokens.whisper",
    },
    "lips": {"pixel_kmeans": "dmlm.tokens.lips", "viseme_oracle": "dmlm.tokens.visemes",
             "lip_reader": "dmlm.tokens.lipreader"},
    "image": {"patch_kmeans": "dmlm.tokens.image", "craft_kmeans": "dmlm.tokens.craft", "raster": "dmlm.tokens.raster"},
}


#: modalities whose tokens follow the media's time line (their encoders take ``return_frames``)
TIMED = ("audio", "lips")
TIMES_SUFFIX = ".times"


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


def times_prefix(token_prefix: str | os.PathLike) -> str:
    """Where the token times of a timed modality's tokens at ``token_prefix`` are written."""
    return f"{token_prefix}{TIMES_SUFFIX}"


def encode_media(
    modality: str, codebook_path: str | os.PathLike, media_path: str | os.PathLike, out_prefix: str | os.PathLike
):
    """Encode ``media_path`` with the codebook at ``codebook_path``; write ragged int32 ids at
    ``out_prefix``. For a timed modality (``TIMED``) also write each token's start time in seconds
    (float64: the first frame of the unit over the encoder's frame rate) at
    ``times_prefix(out_prefix)``, item for item beside the ids; interleaved sequences read them."""
    import numpy as np

    from dmlm.storage import save_ragged
    from dmlm.tokens.codebook import Codebook

    codebook = Codebook.load(codebook_path)
    fitted_for = codebook.settings.get("modality")
    if fitted_for != modality:
        raise DmlmError(f"{codebook_path}: a {fitted_for} codebook, not a {modality} one")
    module = _module(modality, codebook.settings.get("encoder"))
    if modality not in TIMED:
        ids = module.encode(codebook, media_path)
        save_ragged(out_prefix, ids, dtype=np.int32)
        return ids
    ids, frames = module.encode(codebook, media_path, return_frames=True)
    rate = float(module.describe(codebook)["frame_rate"])
    save_ragged(out_prefix, ids, dtype=np.int32)
    save_ragged(times_prefix(out_prefix), [f / rate for f in frames], dtype=np.float64)
    return ids


def check_settings(modality: str, settings: dict) -> None:
    """Validate ``settings`` for its encoder before any job runs (e.g. a pretrained encoder's
    weights folder); DmlmError names the config key, the path and what was expected."""
    if "encoder" not in settings:
        raise DmlmError(f"tokens.{modality}.encoder: missing from the settings")
    module = _module(modality, settings["encoder"])
    if hasattr(module, "check_settings"):
        module.check_settings(settings)


def describe(path: str | os.PathLike) -> dict:
    """``{"vocab_size", "frame_rate", "modality", "encoder"}`` of a fitted codebook (.npz) or a text
    tokenizer (.json). ``frame_rate``: tokens per second before collapsing repeats (None for
    images and text)."""
    from pathlib import Path

    from dmlm.tokens.codebook import Codebook

    if Path(path).suffix == ".json":
        from dmlm.tokens import text

        return {**text.describe(path), "modality": "text"}
    codebook = Codebook.load(path)
    modality, encoder = codebook.settings.get("modality"), codebook.settings.get("encoder")
    module = _module(modality, encoder)
    if hasattr(module, "describe"):
        info = dict(module.describe(codebook))
    else:  # an encoder module without describe(): k-means ids, rate unknown
        info = {"vocab_size": codebook.n_units, "frame_rate": None}
    return {**info, "modality": modality, "encoder": encoder}
