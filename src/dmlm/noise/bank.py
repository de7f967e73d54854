"""Noise banks: a built-in, offline, deterministic bank or a MUSAN folder, stored as one ragged array.

Outputs (both builders): ``<out_prefix>`` (ragged float32, 16 kHz mono, one item per source) and
``<out_prefix>.tsv``, one row per item (row i describes item i of the ragged array):

- ``name``; ``category`` (``noise`` | ``music`` | ``speech``); ``seconds`` (stored length);
- ``package``: the Debian package the recording comes from ("" for synthesized sources and MUSAN);
- ``origin``: the file of origin (absolute path), or what synthesized the source;
- ``start_s``: where in that file the stored audio starts; ``orig_sr``: the file's sample rate
  (0 for synthesized sources), so resampled files are counted;
- ``licence``: the source's licence as its Debian copyright file states it ("" for MUSAN: see
  the LICENSE files of the MUSAN folder).

Settings (the config's ``noise.bank`` plus the global seed):

- built-in: ``{"name": "builtin", "seconds_per_source": S, "seed": int}``; optional
  ``"recordings"`` (default true), ``"recordings_per_category"`` (default 8),
  ``"babble_sources"`` (default 2), ``"music_sources"`` (default 2: MIDI renders, or synthesized
  music without recordings). See :func:`builtin_sources`.
- MUSAN: ``{"path": "/data/musan", ...}``; optional ``"seconds_per_source"`` (keep the first S
  seconds of each file; default: whole files), ``"max_per_category"`` (a seeded random subset of
  files per category; default: all), ``"seed"``. Files: ``.wav``, ``.flac`` or ``.ogg`` under
  ``noise/``, ``music/``, ``speech/``. Bad inputs: a corrupt or unreadable file, an empty one
  (no samples), one with NaN/inf samples, all-zero audio, or a sample rate below 8 kHz stop the
  build with a DmlmError naming the file (a bank silently missing files would change the
  experiment). Any other sample rate is resampled to 16 kHz and counted: ``orig_sr`` in the TSV,
  and the CLI log line says how many files were resampled.
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

# espeak-ng voices for babble ("en-gb+X" does not work with Debian's espeak-ng; "en+X" does):
# two accents x 48 human-sounding variants of espeak-ng 1.51 (robots, whisper, croak left out)
BABBLE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "adam", "Alex", "Alicia", "Andy", "Annie", "aunty", "belinda", "benjamin", "caleb", "david",
    "ed", "edward", "Gene", "gustave", "Jacky", "john", "Lee", "linda", "max", "Michael", "Mike",
    "norbert", "paul", "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "grandma",
    "grandpa", "shelby", "sandro", "anika",
)
BABBLE_VOICES = tuple(f"{lang}+{v}" for lang in ("en-us", "en") for v in BABBLE_VARIANTS)

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


COLUMNS = ("name", "category", "seconds", "package", "origin", "start_s", "orig_sr", "licence")


def _write_bank(out_prefix, items) -> list[tuple[str, str, float]]:
    """Write (name, category, audio, meta) items (any iterable: a generator streams, so a bank of
    many GB never sits in memory) as the ragged array and its TSV; ``meta`` holds the other
    ``COLUMNS`` (missing ones are written empty). Returns (name, category, seconds) per source."""
    rows, lengths = [], []
    data_path, offsets_path = ragged_paths(out_prefix)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(prefix=f".{data_path.name}.", suffix=".raw", dir=data_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for name, category, audio, meta in items:
                audio = np.ascontiguousarray(audio, dtype="<f4")
                f.write(audio.tobytes())
                lengths.append(len(audio))
                row = {"name": name, "category": category, "seconds": round(len(audio) / SAMPLE_RATE, 4),
                       "package": "", "origin": "", "start_s": 0.0, "orig_sr": 0, "licence": ""}
                row.update(meta or {})
                rows.append({k: row[k] for k in COLUMNS})
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
    write_table(f"{out_prefix}.tsv", rows)
    return [(r["name"], r["category"], n / SAMPLE_RATE) for r, n in zip(rows, lengths)]


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
            speech = synthesize(random_sentence(rng), voice, sample_rate=native, letter_names=False)
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


# ----------------------------------------------------------------------------- recordings from Debian

SONIC_PI = ("sonic-pi-samples", Path("/usr/share/sonic-pi/samples"), "CC0-1.0")
COLOBOT = ("colobot-common-sounds", Path("/usr/share/games/colobot"), "GPL-3+")
PACKAGES = {"sonic-pi": SONIC_PI, "colobot": COLOBOT}

# (package key, file relative to the package's folder, category). Curated by ear and by length:
# sonic-pi's ambient, hum and machine recordings are noise, its loops and instruments music;
# colobot's sound effects (motors, machines, impacts; those of 1.3 s or more) are noise, its
# soundtrack music. Files shorter than seconds_per_source are stored whole (the mixer loops them).
_SONIC_NOISE = ("ambi_glass_hum", "ambi_haunted_hum", "ambi_drone", "ambi_sauna", "ambi_lunar_land",
                "ambi_dark_woosh", "ambi_glass_rub", "ambi_soft_buzz", "ambi_swoosh",
                "loop_3d_printer", "loop_industrial", "vinyl_hiss")
_SONIC_MUSIC = ("loop_amen_full", "loop_compus", "loop_garzul", "loop_mika", "loop_safari",
                "loop_tabla", "loop_weirdo", "loop_drone_g_97", "loop_breakbeat", "loop_electric",
                "loop_mehackit1", "loop_mehackit2", "guit_em9", "guit_e_fifths", "ambi_piano",
                "ambi_choir")
_COLOBOT_NOISE = (2, 3, 4, 12, 18, 19, 21, 22, 26, 29, 42, 44, 47, 49, 56, 57, 58, 61, 62, 66, 68,
                  70, 74, 76, 77, 78)
_COLOBOT_MUSIC = ("Constructive", "Humanitarian", "Hv2", "Infinite", "Intro1", "Intro2", "Proton",
                  "Prototype", "Quite") + tuple(f"music{i:03d}" for i in range(2, 14))
RECORDINGS = (
    tuple(("sonic-pi", f"{n}.flac", "noise") for n in _SONIC_NOISE)
    + tuple(("colobot", f"sounds/sound{i:03d}.wav", "noise") for i in _COLOBOT_NOISE)
    + tuple(("sonic-pi", f"{n}.flac", "music") for n in _SONIC_MUSIC)
    + tuple(("colobot", f"music/{n}.ogg", "music") for n in _COLOBOT_MUSIC)
)
_OPT_OUT = "or set noise.bank.recordings: false for a synthesized-only bank"


def check_packages() -> None:
    """DmlmError naming the Debian package when a package the built-in bank reads is missing."""
    from dmlm.noise import midi

    for package, folder, _ in PACKAGES.values():
        if not folder.is_dir():
            raise DmlmError(f"the built-in noise bank reads recordings from the Debian package "
                            f"'{package}', which is not installed ({folder} is missing): install it "
                            f"(scripts/setup.sh does), {_OPT_OUT}")
    midi.check_available()


def select_recordings(seed: int, per_category: int) -> list[tuple[str, str, str]]:
    """A seeded subset of ``RECORDINGS``: up to ``per_category`` per category, in catalogue order."""
    out = []
    for category in CATEGORIES:
        group = [r for r in RECORDINGS if r[2] == category]
        if len(group) > per_category:
            rng = np.random.default_rng([int(seed), zlib.crc32(f"recordings/{category}".encode())])
            group = [group[i] for i in np.sort(rng.choice(len(group), size=per_category, replace=False))]
        out += group
    return out


def read_recording(path: Path, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, float, int]:
    """Up to ``seconds`` of a recording as float64 mono at 16 kHz, silence trimmed at both ends; a
    longer file gives a segment at a seeded random start (redrawn, up to 10 times, while less than
    80% of its 50 ms frames are above -50 dBFS: a song's pause is not a noise source; the most
    active draw is kept). Returns (audio, start_s, file_rate)."""
    import soundfile as sf

    best = None
    try:
        info = sf.info(str(path))
        frames = int(np.ceil(seconds * info.samplerate))
        for _attempt in range(10):
            start = int(rng.integers(0, info.frames - frames + 1)) if info.frames > frames else 0
            data, sr = sf.read(str(path), start=start, frames=frames, dtype="float64", always_2d=True)
            x = data.mean(axis=1)
            hop = max(1, int(0.05 * sr))
            m = len(x) // hop * hop
            rms = np.sqrt(np.mean(x[:m].reshape(-1, hop) ** 2, axis=1)) if m else np.zeros(1)
            active = float(np.mean(rms > 10 ** (-50 / 20)))
            if best is None or active > best[0]:
                best = (active, start, x, sr)
            if active >= 0.8 or info.frames <= frames:
                break
    except Exception as err:
        raise DmlmError(f"cannot read audio file {path}: {err}") from err
    _, start, x, sr = best
    loud = np.flatnonzero(np.abs(x) > 1e-3 * max(np.max(np.abs(x), initial=0.0), 1e-12))
    if not np.any(x) or len(loud) == 0:
        raise DmlmError(f"audio file {path} is silent")
    x = x[loud[0]:loud[-1] + 1]
    start += int(loud[0])
    return _resample(x, int(sr), SAMPLE_RATE)[: int(round(seconds * SAMPLE_RATE))], start / sr, int(sr)


def recording_sources(seed: int, seconds: float, per_category: int):
    """Yield (name, category, float32 audio, meta) for the selected package recordings."""
    check_packages()
    for key, rel, category in select_recordings(seed, per_category):
        package, folder, licence = PACKAGES[key]
        path = folder / rel
        if not path.is_file():
            raise DmlmError(f"the built-in noise bank expects {path} from the Debian package "
                            f"'{package}' (a different version?); reinstall it, {_OPT_OUT}")
        name = f"{key}/{Path(rel).with_suffix('').as_posix()}"
        x, start_s, sr = read_recording(path, seconds, _source_rng(seed, name))
        yield name, category, _normalize(x), {"package": package, "origin": str(path),
                                              "start_s": round(start_s, 6), "orig_sr": sr,
                                              "licence": licence}


def builtin_sources(settings: dict) -> list[tuple[str, str, np.ndarray, dict]]:
    """The built-in bank's (name, category, float32 audio, meta) items; ``meta`` fills the TSV's
    ``package``, ``origin``, ``start_s``, ``orig_sr`` and ``licence`` columns.

    - noise: white, pink and brown noise, 50 and 60 Hz hum (synthesized), then recordings;
    - music: ``music_sources`` pieces composed as MIDI and rendered by fluidsynth with the GM
      soundfont (:mod:`dmlm.noise.midi`), then recordings; without recordings, synthesized music;
    - speech: ``babble_sources`` babbles of 4-8 espeak-ng talkers (voices from ``BABBLE_VOICES``).

    Recordings (``recordings``, default true): ``recordings_per_category`` (default 8) files drawn
    with the seed from ``RECORDINGS`` per category (packages ``sonic-pi-samples``, CC0, and
    ``colobot-common-sounds``, GPL-3+), each up to ``seconds_per_source`` long. Every source is
    drawn from its own generator seeded by (seed, name), so the bank is a function of the seed and
    the package versions. A missing package raises a DmlmError naming it: there is no silent
    fallback, since a bank that depends on what happens to be installed would change results;
    ``recordings: false`` is the explicit synthesized-only bank.
    """
    seconds = _seconds(settings)
    seed = int(_require(settings, "seed"))
    recordings = settings.get("recordings", True)
    if not isinstance(recordings, bool):
        raise DmlmError(f"settings: 'noise.bank.recordings' must be true or false, got {recordings!r}")
    per_category = _count(settings, "recordings_per_category", 8, minimum=0)
    n_music = _count(settings, "music_sources", 2)
    n_babble = _count(settings, "babble_sources", 2)
    n = int(round(seconds * SAMPLE_RATE))
    if recordings:
        check_packages()  # before any work
    out = []

    def add(name, category, make, origin, licence="n/a (synthesized here)"):
        out.append((name, category, _normalize(make(_source_rng(seed, name))),
                    {"origin": origin, "licence": licence}))

    add("white", "noise", lambda r: coloured_noise(n, 0.0, r), "synthesized: white noise")
    add("pink", "noise", lambda r: coloured_noise(n, 1.0, r), "synthesized: pink noise (1/f)")
    add("brown", "noise", lambda r: coloured_noise(n, 2.0, r), "synthesized: brown noise (1/f^2)")
    add("hum50", "noise", lambda r: hum(n, 50.0, r), "synthesized: 50 Hz mains hum")
    add("hum60", "noise", lambda r: hum(n, 60.0, r), "synthesized: 60 Hz mains hum")
    rec = list(recording_sources(seed, seconds, per_category)) if recordings else []
    out += [r for r in rec if r[1] == "noise"]
    for i in range(n_music):
        if recordings:
            add(f"midi{i + 1}", "music", lambda r: midi_music(n, r),
                "fluidsynth + FluidR3_GM.sf2 rendering a generated MIDI piece",
                "MIT (soundfont, fluid-soundfont-gm)")
        else:
            add(f"music{i + 1}", "music", lambda r: music(n, r), "synthesized: pentatonic music")
    out += [r for r in rec if r[1] == "music"]
    for i in range(n_babble):
        add(f"babble{i + 1}", "speech", lambda r: babble(n, r), "espeak-ng babble of 4-8 talkers",
            "GPL-3+ (espeak-ng)")
    return out


def midi_music(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a seeded MIDI piece rendered by fluidsynth (see :mod:`dmlm.noise.midi`)."""
    from dmlm.noise import midi

    piece, _ = midi.compose(n / SAMPLE_RATE + 1.0, rng)
    x = _trim_silence(midi.render(piece, SAMPLE_RATE))
    if len(x) < n:  # pieces are composed a little longer than needed; loop if fluidsynth was short
        x = np.tile(x, -(-n // max(len(x), 1)))
    return x[:n]


def _count(settings: dict, key: str, default: int, minimum: int = 0) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DmlmError(f"settings: 'noise.bank.{key}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def build_builtin_bank(out_prefix, settings: dict) -> list[tuple[str, str, float]]:
    """Write the built-in bank; returns (name, category, seconds) per source."""
    return _write_bank(out_prefix, builtin_sources(settings))


# ----------------------------------------------------------------------------- MUSAN

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
        x = _resample(x, int(sr), sample_rate)
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


def load_musan_bank(folder, out_prefix, settings: dict | None = None) -> list[tuple[str, str, float]]:
    """Read a MUSAN-layout folder into a bank; returns (name, category, seconds) per source.
    Bad files stop the build (see the module docstring); resampled files are counted in the TSV's
    ``orig_sr`` column."""
    settings = settings or {}
    files = select_musan_files(musan_files(folder), settings)
    max_seconds = float(settings["seconds_per_source"]) if settings.get("seconds_per_source") else None
    from tqdm import tqdm

    def items():
        for name, category, path in tqdm(files, desc="noise bank", unit="file", file=sys.stderr):
            x, sr = read_audio(path, SAMPLE_RATE, max_seconds, return_rate=True)
            if not np.any(x):
                raise DmlmError(f"audio file {path} is digital silence (all samples zero)")
            yield name, category, x, {"origin": str(Path(path).resolve()), "orig_sr": sr}

    return _write_bank(out_prefix, items())


def build_bank(settings: dict, out_prefix) -> list[tuple[str, str, float]]:
    """Dispatch on settings: ``{"path": folder, ...}`` -> MUSAN; ``{"name", "seconds_per_source",
    ...}`` -> the built-in bank, under any name (presets keep banks with other settings apart by
    name, dmlm.owners)."""
    if not isinstance(settings, dict):
        raise DmlmError(f"settings: 'noise.bank' must be a mapping, got {settings!r}")
    if settings.get("path"):
        return load_musan_bank(os.path.expanduser(str(settings["path"])), out_prefix, settings)
    if "seconds_per_source" in settings:
        return build_builtin_bank(out_prefix, settings)
    raise DmlmError(f"settings: 'noise.bank' needs 'path' (a MUSAN folder) or 'seconds_per_source' "
                    f"(a built-in bank, e.g. name 'builtin'), got {settings!r}")
    if settings.get("path"):
        return load_musan_bank(os.path.expanduser(str(settings["path"])), out_prefix, settings)
    name = settings.get("name")
    if name == "builtin":
        return build_builtin_bank(out_prefix, settings)
    raise DmlmError(f"settings: 'noise.bank' needs 'path' (a MUSAN folder) or name 'builtin', "
                    f"got {settings!r}")
