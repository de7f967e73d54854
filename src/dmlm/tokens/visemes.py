"""Lip "viseme" tokens (encoder ``viseme_oracle``): an ORACLE of what the lips show.

It does not look at the mouth frames' pixels. It reads the renderer's own phoneme timing (the
manifest's ``phonemes`` column: ``[start_s, end_s, espeak phoneme]`` events, the events the lip
video is rendered from, :mod:`dmlm.corpus.lips`) and gives each video frame the viseme class of the
phoneme at the frame's centre (silence where no phoneme is), as a perfect lip reader with the
renderer's 15 viseme classes would. It answers "what if the lip tokenizer were perfect?": an upper
reference for lips, as ``raster`` is for images, not an encoder result.

Frames are those of the split's lip video (``lips.npy`` / ``lips.offsets.npy``: one unit per frame
at ``fps``); ``frame_stack`` k gives one unit per k frames (the most frequent class of the k, ties
to the smaller id), ``collapse_repeats`` merges consecutive equal units, as ``pixel_kmeans`` does.
Vocabulary: the viseme ids of :data:`dmlm.corpus.lips.VISEMES` (fixed, independent of the data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import Codebook, kept_units, load_ragged, positive_int, progress

ENCODER = "viseme_oracle"
DEFAULT_FPS = 25


def frame_stack(settings: dict) -> int:
    """``frame_stack`` of the settings (default 1), checked."""
    return positive_int(settings, "frame_stack", "lips") if "frame_stack" in settings else 1


def manifest_path(media_path: str | os.PathLike) -> Path:
    """The ``manifest.tsv`` next to a split's lip video prefix (``<split>/lips``)."""
    return Path(media_path).with_name("manifest.tsv")


def frame_visemes(events: list, n_frames: int, fps: float) -> np.ndarray:
    """The viseme id of each of ``n_frames`` frames: the phoneme event holding the frame's centre."""
    from dmlm.corpus.lips import phoneme_to_viseme

    centres = (np.arange(n_frames) + 0.5) / fps
    out = np.zeros(n_frames, dtype=np.int32)  # 0: silence
    for start, end, phoneme in events:
        out[(centres >= float(start)) & (centres < float(end))] = phoneme_to_viseme(str(phoneme))
    return out


def stacked_mode(ids: np.ndarray, k: int) -> np.ndarray:
    """One id per k frames: the group's most frequent id (ties: the smaller); the last group may
    be shorter."""
    if k <= 1 or len(ids) == 0:
        return ids
    return np.array([np.bincount(ids[i : i + k]).argmax() for i in range(0, len(ids), k)], dtype=np.int32)


def read_events(media_path: str | os.PathLike) -> tuple[list[list], np.ndarray]:
    """(phoneme events per utterance, frame offsets of the lip video) of the split at ``media_path``."""
    from dmlm.tokens.text import read_text_column

    frames = load_ragged(media_path, "lips")
    manifest = manifest_path(media_path)
    cells = read_text_column(manifest, "phonemes")
    if len(cells) != len(frames):
        raise DmlmError(f"{manifest} has {len(cells)} rows but {frames.source} has {len(frames)} videos")
    events = []
    for i, cell in enumerate(cells):
        try:
            row = json.loads(cell)
        except ValueError as err:
            raise DmlmError(f"{manifest}: row {i + 1}: `phonemes` is not JSON ({err})") from None
        if not isinstance(row, list) or not all(isinstance(e, list) and len(e) == 3 for e in row):
            raise DmlmError(f"{manifest}: row {i + 1}: expected [start_s, end_s, phoneme] events in `phonemes`")
        events.append(row)
    return events, np.asarray(frames.offsets)


def check_settings(settings: dict) -> None:
    frame_stack(settings)


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """The fixed viseme vocabulary (no learning); reads the split to check its phoneme events."""
    from dmlm.corpus.lips import VISEMES

    frame_stack(settings)
    read_events(media_path)
    ids = np.arange(len(VISEMES), dtype=np.float32)[:, None]  # "centroids": the ids themselves
    return Codebook(ids, {**settings, "modality": "lips"})


def encode(codebook: Codebook, media_path: str | os.PathLike, return_frames: bool = False):
    """int32 viseme ids per utterance; with ``return_frames`` also each kept unit's (stacked)
    frame index, as the other lip encoders give it."""
    from dmlm.corpus.lips import VISEMES

    if codebook.n_units != len(VISEMES):
        raise DmlmError(f"viseme codebook has {codebook.n_units} ids, this code has {len(VISEMES)} visemes (fit it again)")
    k = frame_stack(codebook.settings)
    fps = float(codebook.settings.get("fps", DEFAULT_FPS))
    collapse = bool(codebook.settings.get("collapse_repeats", False))
    events, offsets = read_events(media_path)
    out, kept = [], []
    for i, row in enumerate(progress(events, "viseme tokens")):
        item = stacked_mode(frame_visemes(row, int(offsets[i + 1] - offsets[i]), fps), k)
        kept.append(kept_units(item, collapse))
        out.append(item[kept[-1]])
    return (out, kept) if return_frames else out


def describe(codebook: Codebook) -> dict:
    fps = float(codebook.settings.get("fps", DEFAULT_FPS))
    return {"vocab_size": codebook.n_units, "frame_rate": fps / frame_stack(codebook.settings)}
