"""Recordings from Debian packages (sonic-pi-samples, colobot-common-sounds) for the built-in bank:
a curated catalogue, a seeded selection, and reading a segment that is not a pause."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.noise.synth import CATEGORIES, SAMPLE_RATE, normalize, resample, source_rng

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
    return resample(x, int(sr), SAMPLE_RATE)[: int(round(seconds * SAMPLE_RATE))], start / sr, int(sr)


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
        x, start_s, sr = read_recording(path, seconds, source_rng(seed, name))
        yield name, category, normalize(x), {"package": package, "origin": str(path),
                                              "start_s": round(start_s, 6), "orig_sr": sr,
                                              "licence": licence}

