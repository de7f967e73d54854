"""Synthesized noise sources (coloured noise, mains hum, music, espeak-ng babble, MIDI renders) and
the helpers every bank source shares: 16 kHz mono float32, one generator per source, one RMS."""

from __future__ import annotations

import zlib

import numpy as np

from dmlm.errors import DmlmError

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



def source_rng(seed: int, name: str) -> np.random.Generator:
    """Each built-in source has its own generator, so adding a source changes no other source."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def normalize(x: np.ndarray, rms: float = TARGET_RMS) -> np.ndarray:
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
            audio = trim_silence(np.asarray(speech.audio, dtype=np.float64).ravel())
            pause = np.zeros(int(rng.uniform(0.05, 0.4) * native))
            parts += [audio, pause]
            length += len(audio) + len(pause)
            calls += 1
            if calls > 1000:
                raise DmlmError(f"speech synthesis produced (almost) no audio for voice {voice.name}")
        stream = resample(np.concatenate(parts)[:n_native], native, sample_rate)[:n]
        stream = np.roll(stream, int(rng.integers(0, n)))
        rms = np.sqrt(np.mean(stream ** 2))
        if rms > 0:
            total += stream / rms * rng.uniform(0.7, 1.0)
    return total


def resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new or len(x) == 0:
        return x
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), int(orig), int(new)).numpy()


def trim_silence(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold * max(np.max(np.abs(x), initial=0.0), 1e-12))
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]



def midi_music(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a seeded MIDI piece rendered by fluidsynth (see :mod:`dmlm.noise.midi`)."""
    from dmlm.noise import midi

    piece, _ = midi.compose(n / SAMPLE_RATE + 1.0, rng)
    x = trim_silence(midi.render(piece, SAMPLE_RATE))
    if len(x) < n:  # pieces are composed a little longer than needed; loop if fluidsynth was short
        x = np.tile(x, -(-n // max(len(x), 1)))
    return x[:n]
