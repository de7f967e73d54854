"""A noise bank from a MUSAN-layout folder (noise/, music/, speech/ of .wav, .flac, .ogg): every
file checked (corrupt, empty, non-finite, silent, below 8 kHz: an error naming it), resampled to 16 kHz."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.noise.synth import CATEGORIES, SAMPLE_RATE, resample

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MIN_SAMPLE_RATE = 8000


def read_audio(path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None,
               return_rate: bool = False):
    """Read a sound file as float32 mono at ``sample_rate`` (with ``return_rate``: also the file's
    own rate). Corrupt, empty, non-finite, or below-8-kHz files -> DmlmError naming the file;
    other rates are resampled."""
    import soundfile as sf

    path = Path(path)
    try:
        info = sf.info(str(path))
        frames = -1 if max_seconds is None else int(np.ceil(max_seconds * info.samplerate))
        data, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise DmlmError(f"cannot read audio file {path}: {err}") from err
    if data.shape[0] == 0:
        raise DmlmError(f"audio file {path} is empty (no samples)")
    if sr < MIN_SAMPLE_RATE:
        raise DmlmError(f"audio file {path}: sample rate {sr} Hz is below {MIN_SAMPLE_RATE} Hz; "
                        f"it cannot stand in for {sample_rate} Hz noise")
    x = data.mean(axis=1)
    if not np.all(np.isfinite(x)):
        raise DmlmError(f"audio file {path} contains NaN or infinite samples")
    if sr != sample_rate:
        x = resample(x, int(sr), sample_rate)
    if max_seconds is not None:
        x = x[: int(round(max_seconds * sample_rate))]
    if len(x) == 0:
        raise DmlmError(f"audio file {path} is too short to resample to {sample_rate} Hz")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return (x, int(sr)) if return_rate else x


def musan_files(folder) -> list[tuple[str, str, Path]]:
    """(name, category, path) for folder/{noise,music,speech}/**/*.{wav,flac,ogg}, sorted; name is
    the path relative to the folder without the extension."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DmlmError(f"noise bank folder {folder} does not exist")
    files = []
    for category in CATEGORIES:
        sub = folder / category
        if not sub.is_dir():
            continue
        for p in sorted(sub.rglob("*")):
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
                files.append((p.relative_to(folder).with_suffix("").as_posix(), category, p))
    if not files:
        raise DmlmError(f"noise bank folder {folder} has no audio files ({', '.join(AUDIO_SUFFIXES)}) "
                        f"under {', '.join(c + '/' for c in CATEGORIES)}")
    return files


def select_musan_files(files: list[tuple[str, str, Path]], settings: dict) -> list[tuple[str, str, Path]]:
    """The files the bank reads: all, or with ``max_per_category`` a seeded subset per category
    (the config check reads the same ones)."""
    max_per = settings.get("max_per_category")
    if max_per is None:
        return files
    rng = np.random.default_rng([int(settings.get("seed", 0)), zlib.crc32(b"musan")])
    kept = []
    for category in CATEGORIES:
        group = [f for f in files if f[1] == category]
        if len(group) > int(max_per):
            idx = np.sort(rng.choice(len(group), size=int(max_per), replace=False))
            group = [group[i] for i in idx]
        kept += group
    return kept


def musan_sources(folder, settings: dict | None = None):
    """Yield (name, category, float32 audio, meta) for the folder's selected files, checked one by
    one (see the module docstring); ``meta["orig_sr"]`` counts the resampled files."""
    from tqdm import tqdm

    settings = settings or {}
    files = select_musan_files(musan_files(folder), settings)
    max_seconds = float(settings["seconds_per_source"]) if settings.get("seconds_per_source") else None
    for name, category, path in tqdm(files, desc="noise bank", unit="file", file=sys.stderr):
        x, sr = read_audio(path, SAMPLE_RATE, max_seconds, return_rate=True)
        if not np.any(x):
            raise DmlmError(f"audio file {path} is digital silence (all samples zero)")
        yield name, category, x, {"origin": str(Path(path).resolve()), "orig_sr": sr}
