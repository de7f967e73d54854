"""Generate one split of the 3-Equations corpus: manifest, audio, lips and images.

Utterance i of split S is made from its own generator ``default_rng([seed, crc32(S), i])``, so the
files do not depend on how many worker processes made them. For each utterance: 3 random equations
(:mod:`dmlm.corpus.equations`), 2 of them spoken in random order by one random speaker (the same
speaker list for every split), the two readings separated by 1 s of digital silence; lips rendered
from the phoneme events; the image shows all 3 equations at random spots.

Each reading is trimmed to its speech (espeak pads the start and end with silence): the
``segments`` column gives the speech of each spoken equation, and phoneme times are positions in
the final audio.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError
from dmlm.storage import atomic_path, ragged_paths, save_npy, write_table

GAP_S = 1.0  # silence between the two spoken equations (the authors')
TRIM_THRESHOLD_DB = -40.0  # a sample is speech if |x| exceeds peak * 10^(dB/20)
TRIM_PAD_S = 0.01  # kept around the speech when trimming
N_EQUATIONS, N_SPOKEN = 3, 2

MANIFEST_COLUMNS = ["id", "speaker", "rate", "pitch", "transcript", "equations", "spoken",
                    "segments", "duration", "phonemes"]

REQUIRED = {
    "image": ("width", "height"),
    "speech": ("voices", "variants", "rate_wpm", "rate_jitter", "pitch_jitter", "sample_rate"),
    "lips": ("fps", "size"),
}


def split_code(split: str) -> int:
    """A stable integer for a split name (Python's hash() differs between processes)."""
    return zlib.crc32(split.encode("utf-8"))


def check_settings(settings: dict) -> dict:
    """Raise DmlmError naming the first missing ``corpus.*`` key."""
    if not isinstance(settings, dict):
        raise DmlmError("corpus settings: expected a JSON object")
    if "seed" not in settings:
        raise DmlmError("corpus settings: missing key `seed`")
    for section, keys in REQUIRED.items():
        if not isinstance(settings.get(section), dict):
            raise DmlmError(f"corpus settings: missing section `corpus.{section}`")
        for key in keys:
            if key not in settings[section]:
                raise DmlmError(f"corpus settings: missing key `corpus.{section}.{key}`")
    return settings


def trim_silence(audio: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """(start, end) sample bounds of the speech in ``audio`` (whole range if it is silent)."""
    if len(audio) == 0:
        return 0, 0
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        return 0, len(audio)
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (TRIM_THRESHOLD_DB / 20))
    pad = int(round(TRIM_PAD_S * sample_rate))
    return max(0, int(loud[0]) - pad), min(len(audio), int(loud[-1]) + 1 + pad)


def make_speakers_from(settings: dict):
    from dmlm.corpus.speech import make_speakers

    sp = settings["speech"]
    return make_speakers(
        list(sp["voices"]), list(sp["variants"]), sp["rate_wpm"], sp["rate_jitter"],
        sp["pitch_jitter"], int(settings["seed"]),
    )


def make_item(settings: dict, split: str, index: int, speakers) -> dict:
    """Everything about utterance ``index`` of ``split`` (deterministic)."""
    from dmlm.corpus.equations import random_equation
    from dmlm.corpus.image import render_image
    from dmlm.corpus.lips import render_lips
    from dmlm.corpus.speech import silence, synthesize

    sr = int(settings["speech"]["sample_rate"])
    rng = np.random.default_rng([int(settings["seed"]), split_code(split), index])
    equations = [random_equation(rng) for _ in range(N_EQUATIONS)]
    spoken = [int(k) for k in rng.choice(N_EQUATIONS, size=N_SPOKEN, replace=False)]
    speaker_index = int(rng.integers(len(speakers)))
    voice = speakers[speaker_index]
    noise_seed = int(rng.integers(2**31 - 1))
    image = render_image(equations, int(settings["image"]["width"]),
                         int(settings["image"]["height"]), rng)

    pieces, segments, phonemes, pos = [], [], [], 0  # pos: samples so far
    for k, eq_index in enumerate(spoken):
        if k:
            gap = silence(GAP_S, sr)
            pieces.append(gap)
            pos += len(gap)
        speech = synthesize(equations[eq_index].spoken(), voice, sr)
        start, end = trim_silence(speech.audio, sr)
        t, t0, dur = pos / sr, start / sr, (end - start) / sr
        for p0, p1, name in speech.phonemes:
            a, b = min(max(p0 - t0, 0.0), dur), min(max(p1 - t0, 0.0), dur)
            phonemes.append([round(t + a, 5), round(t + b, 5), name])
        segments.append([round(t, 5), round((pos + end - start) / sr, 5)])
        pieces.append(speech.audio[start:end])
        pos += end - start
    audio = np.concatenate(pieces).astype(np.float32, copy=False)
    duration = len(audio) / sr
    lips = render_lips(
        [tuple(p) for p in phonemes], duration, speaker_seed=speaker_index,
        fps=int(settings["lips"]["fps"]), size=int(settings["lips"]["size"]), noise_seed=noise_seed,
    )
    row = {
        "id": f"{split}-{index:06d}",
        "speaker": voice.name,
        "rate": int(voice.rate_wpm),
        "pitch": int(voice.pitch),
        "transcript": " ".join(equations[k].spoken() for k in spoken),
        "equations": json.dumps([eq.display() for eq in equations]),
        "spoken": json.dumps(spoken),
        "segments": json.dumps(segments),
        "duration": round(duration, 5),
        "phonemes": json.dumps(phonemes),
    }
    return {"row": row, "audio": audio, "lips": np.asarray(lips, dtype=np.uint8), "image": image}


# ------------------------------------------------------------------------- worker processes
_WORKER: dict = {}


def _init_worker(settings, split, speakers) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    _WORKER.update(settings=settings, split=split, speakers=speakers)


def _work(index: int) -> dict:
    return make_item(_WORKER["settings"], _WORKER["split"], index, _WORKER["speakers"])


class RaggedSpool:
    """Write a ragged array item by item without holding it in memory: items go to a hidden spool
    file; :meth:`finish` copies them into ``<prefix>.npy`` (atomically) and writes the offsets."""

    def __init__(self, prefix, dtype):
        self.prefix, self.dtype = Path(prefix), np.dtype(dtype)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        fd, raw = tempfile.mkstemp(prefix=f".{self.prefix.name}.", suffix=".spool",
                                   dir=self.prefix.parent)
        self.raw, self.file = Path(raw), os.fdopen(fd, "wb")
        self.lengths: list[int] = []
        self.item_shape: tuple | None = None

    def append(self, item: np.ndarray) -> None:
        item = np.ascontiguousarray(item, dtype=self.dtype)
        if self.item_shape is None:
            self.item_shape = item.shape[1:]
        elif item.shape[1:] != self.item_shape:
            raise ValueError(f"{self.prefix}: item shape {item.shape} does not match {self.item_shape}")
        self.file.write(item.tobytes())
        self.lengths.append(len(item))

    def finish(self) -> None:
        self.file.close()
        shape = (int(sum(self.lengths)),) + tuple(self.item_shape or ())
        data_path, offsets_path = ragged_paths(self.prefix)
        with atomic_path(data_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=shape)
            if shape[0]:
                src = np.memmap(self.raw, dtype=self.dtype, mode="r", shape=shape)
                step = max(1, (64 << 20) // max(1, src[0].nbytes))
                for a in range(0, shape[0], step):
                    out[a : a + step] = src[a : a + step]
                del src
            out.flush()
            del out
        save_npy(offsets_path, np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64))
        self.close()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.raw.unlink(missing_ok=True)


def build_split(out_dir, split: str, n: int, settings: dict, threads: int = 1,
                progress: bool = True) -> pd.DataFrame:
    """Make ``n`` utterances of ``split`` into ``out_dir`` (manifest.tsv, audio, lips, images.npy).

    ``settings``: the config's ``corpus`` section without ``splits``, plus ``seed``.
    """
    from tqdm import tqdm

    check_settings(settings)
    if int(n) < 0:
        raise DmlmError(f"corpus: number of utterances must be >= 0, got {n}")
    n, threads = int(n), max(1, int(threads))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    speakers = make_speakers_from(settings)
    if not speakers:
        raise DmlmError("corpus.speech: voices x variants gives no speaker")

    audio = RaggedSpool(out_dir / "audio", np.float32)
    lips = RaggedSpool(out_dir / "lips", np.uint8)
    rows, images = [], []
    try:
        if threads == 1 or n <= 1:
            results = (make_item(settings, split, i, speakers) for i in range(n))
            pool = None
        else:
            # fork where available (no re-import of __main__, no start-up cost); speech.py gives
            # each synthesis a fresh espeak-ng, so results do not depend on the worker history
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(
                min(threads, n), initializer=_init_worker, initargs=(settings, split, speakers))
            chunk = max(1, min(8, n // (4 * threads)))
            results = pool.imap(_work, range(n), chunksize=chunk)
        bar = tqdm(total=n, desc=f"corpus {split}", file=sys.stderr, disable=not progress)
        try:
            for item in results:
                rows.append(item["row"])
                audio.append(item["audio"])
                lips.append(item["lips"])
                images.append(item["image"])
                bar.update(1)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            bar.close()
        audio.finish()
        lips.finish()
        height, width = int(settings["image"]["height"]), int(settings["image"]["width"])
        stack = np.stack(images) if images else np.zeros((0, height, width), np.uint8)
        save_npy(out_dir / "images.npy", stack.astype(np.uint8, copy=False))
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        write_table(out_dir / "manifest.tsv", manifest)
    finally:
        audio.close()
        lips.close()
    return manifest
