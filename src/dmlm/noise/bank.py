"""Noise banks: a built-in, offline, deterministic bank or a MUSAN folder, stored as one ragged array.

Outputs (both builders): ``<out_prefix>`` (ragged float32, 16 kHz mono, one item per source) and
``<out_prefix>.tsv`` with columns ``name``, ``category`` (``noise`` | ``music`` | ``speech``),
``seconds``. Row i of the table describes item i of the ragged array.

Settings (the config's ``noise.bank`` plus the global seed):

- built-in: ``{"name": "builtin", "seconds_per_source": S, "seed": int}``; optional
  ``"babble_sources"`` (default 2), ``"music_sources"`` (default 2).
- MUSAN: ``{"path": "/data/musan", ...}``; optional ``"seconds_per_source"`` (keep the first S
  seconds of each file; default: whole files), ``"max_per_category"`` (a seeded random subset of
  files per category; default: all), ``"seed"``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.storage import atomic_path, ragged_paths, save_npy, write_table

SAMPLE_RATE = 16000
CATEGORIES = ("noise", "music", "speech")
TARGET_RMS = 0.1  # every built-in source is stored at this RMS (mixing rescales anyway)

# espeak-ng voices for babble ("en-gb+X" does not work with Debian's espeak-ng; "en+X" does)
BABBLE_VOICES = tuple(f"{lang}+{v}" for lang in ("en-us", "en") for v in
                      ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"))

_WORDS = (
    "the a this that my your our their some every one another people time day night year way "
    "thing man woman child world life hand part place week case point government company number "
    "group problem fact house garden river city table window water music story letter morning "
    "evening friend family teacher doctor market train road paper kitchen window weather summer "
    "winter coffee bread street office meeting question answer picture village island mountain "
    "is was will would could should must can might has had does goes makes takes sees knows "
    "thinks comes wants looks uses finds gives tells works calls tries asks needs feels leaves "
    "puts means keeps lets begins seems helps talks turns starts shows hears plays runs moves "
    "lives believes brings happens writes sits stands loses pays meets includes continues "
    "good new first last long great little own other old right big high different small large "
    "next early young important few public bad same able green quiet bright cold warm heavy "
    "in on at with from about into over after under before between through during without "
    "again still never always often really today tomorrow yesterday there here very quite "
    "and but or so because although while when where if then"
).split()


# ----------------------------------------------------------------------------- helpers

def _source_rng(seed: int, name: str) -> np.random.Generator:
    """Each built-in source has its own generator, so adding a source changes no other source."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _normalize(x: np.ndarray, rms: float = TARGET_RMS) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    power = float(np.mean(x ** 2))
    if power <= 0:
        raise DmlmError("internal: a built-in noise source came out silent")
    x = x * (rms / np.sqrt(power))
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        x = x * (0.99 / peak)
    return x.astype(np.float32)


def _require(settings: dict, key: str, where: str = "noise.bank"):
    if key not in settings:
        raise DmlmError(f"settings: missing key '{where}.{key}'")
    return settings[key]


def _seconds(settings: dict) -> float:
    s = _require(settings, "seconds_per_source")
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise DmlmError(f"settings: 'noise.bank.seconds_per_source' must be a number, got {s!r}")
    if not s > 0:
        raise DmlmError(f"settings: 'noise.bank.seconds_per_source' must be > 0, got {s}")
    return s


def _write_bank(out_prefix, items) -> list[tuple[str, str, float]]:
    """Write (name, category, audio) triples (any iterable: a generator streams, so a bank of many
    GB never sits in memory) as the ragged array and its TSV; returns (name, category, seconds)."""
    rows, lengths = [], []
    data_path, offsets_path = ragged_paths(out_prefix)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(prefix=f".{data_path.name}.", suffix=".raw", dir=data_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for name, category, audio in items:
                audio = np.ascontiguousarray(audio, dtype="<f4")
                f.write(audio.tobytes())
                lengths.append(len(audio))
                rows.append((name, category, len(audio) / SAMPLE_RATE))
        if not rows:
            raise DmlmError(f"noise bank {out_prefix}: no sources")
        with atomic_path(data_path) as tmp:
            with open(tmp, "wb") as out, open(raw, "rb") as src:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": "<f4", "fortran_order": False, "shape": (int(sum(lengths)),)})
                shutil.copyfileobj(src, out, 16 << 20)
    finally:
        Path(raw).unlink(missing_ok=True)
    save_npy(offsets_path, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    write_table(f"{out_prefix}.tsv", [
        {"name": n, "category": c, "seconds": round(sec, 4)} for n, c, sec in rows
    ])
    return rows


# ----------------------------------------------------------------------------- built-in sources

def coloured_noise(n: int, exponent: float, rng: np.random.Generator,
                   sample_rate: int = SAMPLE_RATE, f_min: float = 20.0) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f**exponent (0 white, 1 pink, 2 brown).

    Shaped in the frequency domain; below ``f_min`` the spectrum is flat, so brown noise does not
    turn into sub-audible drift. Returns float64 with unit variance (before normalization).
    """
    white = rng.standard_normal(n)
    if exponent == 0:
        return white
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    shape = np.maximum(f, f_min) ** (-exponent / 2.0)
    shape[0] = 0.0  # no DC
    out = np.fft.irfft(spec * shape, n=n)
    return out / out.std()


def hum(n: int, mains_hz: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Machine-like hum: harmonics of the mains frequency (random amplitudes and phases, slow
    amplitude wobble) plus a little pink broadband noise (fans, bearings)."""
    t = np.arange(n) / sample_rate
    x = np.zeros(n)
    f0 = mains_hz * (1 + rng.uniform(-0.002, 0.002))
    for k in range(1, 40):
        fk = k * f0
        if fk > 0.45 * sample_rate:
            break
        amp = rng.uniform(0.3, 1.0) / k ** rng.uniform(0.6, 1.2)
        if k % 2 == 0:
            amp *= rng.uniform(0.3, 1.0)  # transformers hum mostly on even mains harmonics (100/120 Hz)
        x += amp * np.sin(2 * np.pi * fk * t + rng.uniform(0, 2 * np.pi))
    wobble = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.7) * t + rng.uniform(0, 2 * np.pi))
    x *= wobble
    x /= x.std()
    return x + 0.25 * coloured_noise(n, 1.0, rng, sample_rate)


def music(n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Simple synthesized music: a melody and a bass line of random notes from a pentatonic scale,
    each note a few harmonics with an attack and exponential decay, plus chords on the beat."""
    x = np.zeros(n + 4 * sample_rate)
    bpm = rng.uniform(80, 150)
    beat = 60.0 / bpm
    root = 220.0 * 2 ** (rng.integers(-5, 7) / 12)
    scale = np.array([0, 2, 4, 7, 9])  # major pentatonic

    def note(freq: float, start: float, dur: float, amp: float, n_harm: int, decay: float):
        i0 = int(start * sample_rate)
        m = int(dur * sample_rate)
        if i0 >= n or m <= 0:
            return
        tt = np.arange(m) / sample_rate
        env = np.minimum(tt / 0.01, 1.0) * np.exp(-tt / decay)
        tone = np.zeros(m)
        for h in range(1, n_harm + 1):
            if h * freq < 0.45 * sample_rate:
                tone += np.sin(2 * np.pi * h * freq * tt + rng.uniform(0, 2 * np.pi)) / h ** 1.5
        x[i0:i0 + m] += amp * env * tone

    def pitch(octave: int, degree: int) -> float:
        return root * 2 ** (octave + scale[degree % 5] / 12 + degree // 5)

    seconds = n / sample_rate
    # melody: a random walk over the scale, notes of 1/2, 1 or 2 beats
    t, deg = 0.0, int(rng.integers(0, 5))
    while t < seconds:
        dur = beat * rng.choice([0.5, 1.0, 1.0, 2.0])
        deg = int(np.clip(deg + rng.integers(-2, 3), -3, 9))
        if rng.random() > 0.1:  # an occasional rest
            note(pitch(0, deg), t, dur * 1.5, 0.6, 6, rng.uniform(0.2, 0.6))
        t += dur
    # bass: root or fifth, every two beats
    t = 0.0
    while t < seconds:
        note(pitch(-2, int(rng.choice([0, 3]))), t, 2 * beat * 1.2, 0.8, 4, 0.5)
        t += 2 * beat
    # chords: three scale notes every four beats
    t = 0.0
    while t < seconds:
        base = int(rng.integers(0, 5))
        for d in (base, base + 2, base + 4):
            note(pitch(-1, d), t, 4 * beat, 0.25, 3, 1.5)
        t += 4 * beat
    return x[:n]


def random_sentence(rng: np.random.Generator) -> str:
    k = int(rng.integers(5, 13))
    words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), size=k)]
    return " ".join(words).capitalize() + "."


def babble(n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE,
           n_voices: int | None = None) -> np.ndarray:
    """4-8 espeak talkers reading random English-ish sentences, each a continuous stream with
    short pauses, shifted by a random (circular) offset, equalized in level and summed."""
    from dmlm.corpus.speech import Voice, native_sample_rate, synthesize

    native = native_sample_rate()  # synthesize at espeak's rate, resample each stream once
    n_native = int(np.ceil(n * native / sample_rate)) + 64
    if n_voices is None:
        n_voices = int(rng.integers(4, 9))
    names = rng.choice(len(BABBLE_VOICES), size=n_voices, replace=n_voices > len(BABBLE_VOICES))
    total = np.zeros(n)
    for vi in names:
        voice = Voice(name=BABBLE_VOICES[int(vi)], rate_wpm=int(rng.integers(140, 210)),
                      pitch=int(rng.integers(30, 71)))
        parts, length, calls = [], 0, 0
        while length < n_native:
            speech = synthesize(random_sentence(rng), voice, sample_rate=native)
            audio = _trim_silence(np.asarray(speech.audio, dtype=np.float64).ravel())
            pause = np.zeros(int(rng.uniform(0.05, 0.4) * native))
            parts += [audio, pause]
            length += len(audio) + len(pause)
            calls += 1
            if calls > 1000:
                raise DmlmError(f"speech synthesis produced (almost) no audio for voice {voice.name}")
        stream = _resample(np.concatenate(parts)[:n_native], native, sample_rate)[:n]
        stream = np.roll(stream, int(rng.integers(0, n)))
        rms = np.sqrt(np.mean(stream ** 2))
        if rms > 0:
            total += stream / rms * rng.uniform(0.7, 1.0)
    return total


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new or len(x) == 0:
        return x
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), int(orig), int(new)).numpy()


def _trim_silence(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * max(np.max(np.abs(x), initial=0.0), 1e-12))
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def builtin_sources(settings: dict) -> list[tuple[str, str, np.ndarray]]:
    """The built-in bank's (name, category, float32 audio) triples."""
    seconds = _seconds(settings)
    seed = int(_require(settings, "seed"))
    n = int(round(seconds * SAMPLE_RATE))
    out = []

    def add(name, category, make):
        out.append((name, category, _normalize(make(_source_rng(seed, name)))))

    add("white", "noise", lambda r: coloured_noise(n, 0.0, r))
    add("pink", "noise", lambda r: coloured_noise(n, 1.0, r))
    add("brown", "noise", lambda r: coloured_noise(n, 2.0, r))
    add("hum50", "noise", lambda r: hum(n, 50.0, r))
    add("hum60", "noise", lambda r: hum(n, 60.0, r))
    for i in range(int(settings.get("music_sources", 2))):
        add(f"music{i + 1}", "music", lambda r: music(n, r))
    for i in range(int(settings.get("babble_sources", 2))):
        add(f"babble{i + 1}", "speech", lambda r: babble(n, r))
    return out


def build_builtin_bank(out_prefix, settings: dict) -> list[tuple[str, str, float]]:
    """Write the built-in bank; returns (name, category, seconds) per source."""
    return _write_bank(out_prefix, builtin_sources(settings))


# ----------------------------------------------------------------------------- MUSAN

def read_audio(path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Read a sound file as float32 mono at ``sample_rate``; bad or empty files -> DmlmError."""
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
    x = data.mean(axis=1)
    if not np.all(np.isfinite(x)):
        raise DmlmError(f"audio file {path} contains NaN or infinite samples")
    if sr != sample_rate:
        x = _resample(x, int(sr), sample_rate)
    if max_seconds is not None:
        x = x[: int(round(max_seconds * sample_rate))]
    if len(x) == 0:
        raise DmlmError(f"audio file {path} is too short to resample to {sample_rate} Hz")
    return np.ascontiguousarray(x, dtype=np.float32)


def musan_files(folder) -> list[tuple[str, str, Path]]:
    """(name, category, path) for folder/{noise,music,speech}/**/*.wav, sorted; name is the path
    relative to the folder without the extension."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DmlmError(f"noise bank folder {folder} does not exist")
    files = []
    for category in CATEGORIES:
        sub = folder / category
        if not sub.is_dir():
            continue
        for p in sorted(sub.rglob("*")):
            if p.suffix.lower() == ".wav" and p.is_file():
                files.append((p.relative_to(folder).with_suffix("").as_posix(), category, p))
    if not files:
        raise DmlmError(f"noise bank folder {folder} has no .wav files under "
                        f"{', '.join(c + '/' for c in CATEGORIES)}")
    return files


def load_musan_bank(folder, out_prefix, settings: dict | None = None) -> list[tuple[str, str, float]]:
    """Read a MUSAN-layout folder into a bank; returns (name, category, seconds) per source."""
    settings = settings or {}
    files = musan_files(folder)
    max_per = settings.get("max_per_category")
    if max_per is not None:
        rng = np.random.default_rng([int(settings.get("seed", 0)), zlib.crc32(b"musan")])
        kept = []
        for category in CATEGORIES:
            group = [f for f in files if f[1] == category]
            if len(group) > int(max_per):
                idx = np.sort(rng.choice(len(group), size=int(max_per), replace=False))
                group = [group[i] for i in idx]
            kept += group
        files = kept
    max_seconds = float(settings["seconds_per_source"]) if settings.get("seconds_per_source") else None
    from tqdm import tqdm

    def items():
        for name, category, path in tqdm(files, desc="noise bank", unit="file", file=sys.stderr):
            x = read_audio(path, SAMPLE_RATE, max_seconds)
            if not np.any(x):
                raise DmlmError(f"audio file {path} is digital silence (all samples zero)")
            yield name, category, x

    return _write_bank(out_prefix, items())


def build_bank(settings: dict, out_prefix) -> list[tuple[str, str, float]]:
    """Dispatch on settings: ``{"path": folder, ...}`` -> MUSAN; ``{"name": "builtin", ...}``."""
    if not isinstance(settings, dict):
        raise DmlmError(f"settings: 'noise.bank' must be a mapping, got {settings!r}")
    if settings.get("path"):
        return load_musan_bank(os.path.expanduser(str(settings["path"])), out_prefix, settings)
    name = settings.get("name")
    if name == "builtin":
        return build_builtin_bank(out_prefix, settings)
    raise DmlmError(f"settings: 'noise.bank' needs 'path' (a MUSAN folder) or name 'builtin', "
                    f"got {settings!r}")
