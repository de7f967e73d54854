"""Generate one split of the 3-Equations corpus: manifest, audio, lips and images.

Utterance i of split S is made from its own generator ``default_rng([seed, crc32(S), i])``, so the
files do not depend on how many worker processes made them. For each utterance: 3 random equations
(:mod:`dmlm.corpus.equations`), 2 of them spoken in random order by one random speaker (the same
speaker list for every split), the two readings separated by 1 s of digital silence; lips rendered
from the phoneme events; the image shows all 3 equations at random spots.

Speakers: ``corpus.speech.test_speakers`` (default 0) speakers are held out for the split named
``test``; the other splits never use them (:func:`split_speaker_indices`).

Generation is resumable: finished chunks of utterances are kept in ``<out_dir>/.resume/`` (not a
declared output) until the split's files are written, so a killed job redoes at most one chunk per
worker; see :func:`build_split`.

Each reading is trimmed to its speech (espeak pads the start and end with silence): the
``segments`` column gives the speech of each spoken equation, and phoneme times are positions in
the final audio.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import hashlib
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError
from dmlm.storage import atomic_path, ragged_paths, save_npy, write_table

GAP_S = 1.0  # silence between the two spoken equations (the authors')
TRIM_THRESHOLD_DB = -40.0  # a sample is speech if |x| exceeds peak * 10^(dB/20)
TRIM_PAD_S = 0.01  # kept around the speech when trimming
N_EQUATIONS, N_SPOKEN = 3, 2
TEST_SPLIT = "test"  # the split whose speakers corpus.speech.test_speakers holds out
RESUME_DIR = ".resume"  # undeclared folder in the output folder: finished chunks of a killed job
CHUNK_SIZE = 16  # utterances per resume chunk (at most this many are redone after a kill)

MANIFEST_COLUMNS = ["id", "speaker", "rate", "pitch", "transcript", "equations", "spoken",
                    "segments", "duration", "phonemes", "boxes"]

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


def test_speaker_indices(n_speakers: int, n_test: int, seed: int) -> list[int]:
    """Indices (into the speaker list, sorted) of the ``n_test`` speakers reserved for the test
    split: the first ``n_test`` of a permutation drawn from ``default_rng([seed, crc32("speakers")])``."""
    if n_test > 0 and n_test >= n_speakers:
        raise DmlmError(
            f"corpus.speech.test_speakers: {n_test} held-out speakers leaves none for training "
            f"(voices x variants gives {n_speakers} speakers)")
    if n_test <= 0:
        return []
    perm = np.random.default_rng([int(seed), split_code("speakers")]).permutation(n_speakers)
    return sorted(int(k) for k in perm[:n_test])


def split_speaker_indices(settings: dict, split: str, n_speakers: int) -> list[int]:
    """The speakers (indices into the speaker list) that utterances of ``split`` are drawn from.

    With ``corpus.speech.test_speakers`` = k > 0, k speakers are held out: the split named ``test``
    uses only them, every other split (train, val, ...) only the others. k = 0 (default): every
    split uses every speaker."""
    n_test = int(settings["speech"].get("test_speakers", 0) or 0)
    if n_test < 0:
        raise DmlmError(f"corpus.speech.test_speakers: must be >= 0, got {n_test}")
    held = test_speaker_indices(n_speakers, n_test, int(settings["seed"]))
    if not held:
        return list(range(n_speakers))
    if split == TEST_SPLIT:
        return held
    return [k for k in range(n_speakers) if k not in set(held)]


@dataclass
class Plan:
    """The random choices of one utterance, drawn before any rendering (cheap)."""

    rng: np.random.Generator  # continues with the image placement
    equations: list
    spoken: list[int]
    speaker_index: int  # into the full speaker list (also the lips look)
    noise_seed: int


def plan_item(settings: dict, split: str, index: int, pool: list[int]) -> Plan:
    """Equations, spoken pair and speaker of utterance ``index`` of ``split``; ``pool`` is
    :func:`split_speaker_indices` (drawn as ``pool[rng.integers(len(pool))]``)."""
    from dmlm.corpus.equations import random_equation

    rng = np.random.default_rng([int(settings["seed"]), split_code(split), index])
    equations = [random_equation(rng) for _ in range(N_EQUATIONS)]
    spoken = [int(k) for k in rng.choice(N_EQUATIONS, size=N_SPOKEN, replace=False)]
    speaker_index = int(pool[int(rng.integers(len(pool)))])
    noise_seed = int(rng.integers(2**31 - 1))
    return Plan(rng, equations, spoken, speaker_index, noise_seed)


def make_item(settings: dict, split: str, index: int, speakers, pool: list[int] | None = None) -> dict:
    """Everything about utterance ``index`` of ``split`` (deterministic). ``pool``: the speakers
    this split may use (default: :func:`split_speaker_indices`)."""
    from dmlm.corpus.equations import check_transcript
    from dmlm.corpus.image import render_image
    from dmlm.corpus.lips import render_lips
    from dmlm.corpus.speech import silence, synthesize

    if pool is None:
        pool = split_speaker_indices(settings, split, len(speakers))
    sr = int(settings["speech"]["sample_rate"])
    plan = plan_item(settings, split, index, pool)
    rng, equations, spoken = plan.rng, plan.equations, plan.spoken
    speaker_index, noise_seed = plan.speaker_index, plan.noise_seed
    voice = speakers[speaker_index]
    image, boxes = render_image(equations, int(settings["image"]["width"]),
                                int(settings["image"]["height"]), rng, return_boxes=True)

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
    transcript = " ".join(equations[k].spoken() for k in spoken)
    check_transcript(transcript)
    row = {
        "id": f"{split}-{index:06d}",
        "speaker": voice.name,
        "rate": int(voice.rate_wpm),
        "pitch": int(voice.pitch),
        "transcript": transcript,
        "equations": json.dumps([eq.display() for eq in equations]),
        "spoken": json.dumps(spoken),
        "segments": json.dumps(segments),
        "duration": round(duration, 5),
        "phonemes": json.dumps(phonemes),
        # ink box [x0, y0, x1, y1] of each equation in the image, in the order of `equations`
        # (for analysis and the raster oracle, dmlm.tokens.raster; never given to an encoder of pixels)
        "boxes": json.dumps([[int(v) for v in box] for box in boxes]),
    }
    return {"row": row, "audio": audio, "lips": np.asarray(lips, dtype=np.uint8), "image": image}


# ------------------------------------------------------------------------- worker processes
_WORKER: dict = {}


def _init_worker(settings, split, speakers, pool) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    _WORKER.update(settings=settings, split=split, speakers=speakers, pool=pool)


def _work(index: int) -> dict:
    return make_item(_WORKER["settings"], _WORKER["split"], index, _WORKER["speakers"], _WORKER["pool"])


# ------------------------------------------------------------------------------ resume chunks
def _fingerprint(settings: dict, split: str, chunk_size: int) -> str:
    """What a chunk's content depends on: the settings, the split, the chunk size and the code
    of the generator (a chunk made by other code or settings is never reused)."""
    code = hashlib.sha256()
    for name in ("equations.py", "image.py", "speech.py", "lips.py", "build.py"):
        code.update((Path(__file__).parent / name).read_bytes())
    blob = json.dumps({"settings": settings, "split": split, "chunk_size": int(chunk_size),
                       "code": code.hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _chunk_path(resume: Path, start: int, stop: int) -> Path:
    return resume / f"chunk-{start:08d}-{stop:08d}.npz"


def _save_chunk(path: Path, items: list[dict]) -> None:
    """One chunk of finished utterances, written atomically (a file that exists is complete)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                rows=np.array(json.dumps([it["row"] for it in items])),
                audio=np.concatenate([it["audio"] for it in items]).astype(np.float32, copy=False),
                audio_lengths=np.array([len(it["audio"]) for it in items], np.int64),
                lips=np.concatenate([it["lips"] for it in items]).astype(np.uint8, copy=False),
                lips_lengths=np.array([len(it["lips"]) for it in items], np.int64),
                images=np.stack([it["image"] for it in items]).astype(np.uint8, copy=False),
            )


def _chunk_ok(path: Path, n_items: int) -> bool:
    try:
        with np.load(path) as z:
            return (len(z["audio_lengths"]) == n_items and len(z["lips_lengths"]) == n_items
                    and len(json.loads(str(z["rows"]))) == n_items)
    except Exception:  # unreadable: made again
        return False


def _open_resume(out_dir: Path, fingerprint: str, chunks: list[tuple[int, int]]) -> tuple[Path, set]:
    """The resume folder (made or reused) and the chunks already finished in it."""
    from dmlm.storage import read_json, write_json

    resume = out_dir / RESUME_DIR
    progress = resume / "progress.json"
    if resume.exists():
        try:
            same = read_json(progress).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:  # from other settings or code: start over
            shutil.rmtree(resume)
    resume.mkdir(parents=True, exist_ok=True)
    if not progress.exists():
        write_json(progress, {"fingerprint": fingerprint})
    done = {c for c in chunks if _chunk_path(resume, *c).exists() and _chunk_ok(_chunk_path(resume, *c), c[1] - c[0])}
    return resume, done


def _assemble(out_dir: Path, resume: Path, chunks: list[tuple[int, int]], settings: dict) -> pd.DataFrame:
    """Join the chunks into the split's files (each written atomically; manifest last)."""
    paths = [_chunk_path(resume, *c) for c in chunks]
    rows, lengths = [], {"audio": [], "lips": []}
    for p in paths:
        with np.load(p) as z:
            rows += json.loads(str(z["rows"]))
            for name in lengths:
                lengths[name].append(z[f"{name}_lengths"])
    height, width = int(settings["image"]["height"]), int(settings["image"]["width"])
    size = int(settings["lips"]["size"])
    item_shapes = {"audio": (), "lips": (size, size)}
    dtypes = {"audio": np.float32, "lips": np.uint8}
    for name in ("audio", "lips"):
        lens = np.concatenate(lengths[name]) if lengths[name] else np.zeros(0, np.int64)
        shape = (int(lens.sum()),) + item_shapes[name]
        data_path, offsets_path = ragged_paths(out_dir / name)
        with atomic_path(data_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtypes[name], shape=shape)
            pos = 0
            for p in paths:
                with np.load(p) as z:
                    block = z[name]
                out[pos : pos + len(block)] = block
                pos += len(block)
            out.flush()
            del out
        save_npy(offsets_path, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
    with atomic_path(out_dir / "images.npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), height, width))
        pos = 0
        for p in paths:
            with np.load(p) as z:
                block = z["images"]
            out[pos : pos + len(block)] = block
            pos += len(block)
        out.flush()
        del out
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    write_table(out_dir / "manifest.tsv", manifest)
    return manifest


def build_split(out_dir, split: str, n: int, settings: dict, threads: int = 1,
                progress: bool = True, chunk_size: int = CHUNK_SIZE) -> pd.DataFrame:
    """Make ``n`` utterances of ``split`` into ``out_dir`` (manifest.tsv, audio, lips, images.npy).

    ``settings``: the config's ``corpus`` section without ``splits``, plus ``seed``.

    Resumable: utterances are made in chunks of ``chunk_size``; each finished chunk is saved in
    ``out_dir/.resume/`` (with ``progress.json``, a fingerprint of the settings, split and code).
    A job killed midway (even by SIGKILL) and started again with the same settings makes only the
    missing chunks; the files are identical to those of an uninterrupted build. The folder is
    removed once the split's files are written.
    """
    from tqdm import tqdm

    check_settings(settings)
    if int(n) < 0:
        raise DmlmError(f"corpus: number of utterances must be >= 0, got {n}")
    n, threads, chunk_size = int(n), max(1, int(threads)), max(1, int(chunk_size))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    speakers = make_speakers_from(settings)
    if not speakers:
        raise DmlmError("corpus.speech: voices x variants gives no speaker")
    pool_speakers = split_speaker_indices(settings, split, len(speakers))

    chunks = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    resume, done = _open_resume(out_dir, _fingerprint(settings, split, chunk_size), chunks)
    todo = [c for c in chunks if c not in done]
    indices = [i for a, b in todo for i in range(a, b)]
    bar = tqdm(total=n, initial=n - len(indices), desc=f"corpus {split}", file=sys.stderr,
               disable=not progress)
    pool = None
    try:
        if threads == 1 or len(indices) <= 1:
            results = (make_item(settings, split, i, speakers, pool_speakers) for i in indices)
        else:
            # fork where available (no re-import of __main__, no start-up cost); speech.py gives
            # each synthesis a fresh espeak-ng, so results do not depend on the worker history
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(
                min(threads, len(indices)), initializer=_init_worker,
                initargs=(settings, split, speakers, pool_speakers))
            chunk = max(1, min(8, len(indices) // (4 * threads)))
            results = pool.imap(_work, indices, chunksize=chunk)
        todo_iter, items = iter(todo), []
        current = next(todo_iter, None)
        for item in results:  # in index order
            items.append(item)
            bar.update(1)
            if len(items) == current[1] - current[0]:
                _save_chunk(_chunk_path(resume, *current), items)
                items, current = [], next(todo_iter, None)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    manifest = _assemble(out_dir, resume, chunks, settings)
    shutil.rmtree(resume, ignore_errors=True)
    return manifest
