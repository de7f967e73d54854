"""Music for the built-in noise bank: a seeded General MIDI piece, rendered by fluidsynth.

The MIDI file is composed here (no MIDI file ships with the project): a chord progression in a
random key and tempo, a melody over it, a bass line, sustained chords and (usually) a drum kit,
each part on a General MIDI instrument drawn from a short list. ``fluidsynth`` renders it with the
``FluidR3_GM`` soundfont (Debian ``fluidsynth`` + ``fluid-soundfont-gm``; the soundfont's samples
are recordings of real instruments, MIT licence) straight to 16 kHz float WAV, so there is no
dither and the render is a pure function of the MIDI bytes.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
FLUIDSYNTH_PACKAGE = "fluidsynth"
TICKS = 480  # per quarter note

# General MIDI programs (0-based)
MELODY = {"piano": 0, "electric_piano": 4, "vibraphone": 11, "organ": 16, "nylon_guitar": 24,
          "violin": 40, "trumpet": 56, "alto_sax": 65, "clarinet": 71, "flute": 73}
CHORDS = {"piano": 0, "strings": 48, "choir": 52, "warm_pad": 89, "organ": 19, "steel_guitar": 25}
BASS = {"acoustic_bass": 32, "fingered_bass": 33, "synth_bass": 38}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4))


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_bytes(events: list[tuple[int, bytes]], tempo_us: int) -> bytes:
    """A format-0 Standard MIDI File from (tick, message) pairs (any order)."""
    track = bytearray(b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big"))
    now = 0
    # note-offs (0x80) before note-ons at the same tick, so a repeated note is re-struck
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80, e[1])):
        track += _varlen(tick - now) + msg
        now = tick
    track += b"\x00\xff\x2f\x00"
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS)
            + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def compose(seconds: float, rng: np.random.Generator) -> tuple[bytes, dict]:
    """A random piece at least ``seconds`` long; returns (MIDI bytes, description)."""
    bpm = float(rng.uniform(70, 140))
    tempo_us = int(round(60e6 / bpm))
    beats = int(np.ceil(seconds * bpm / 60.0)) + 4
    bars = -(-beats // 4)
    minor = bool(rng.random() < 0.4)
    scale = MINOR if minor else MAJOR
    tonic = 48 + int(rng.integers(0, 12))  # C3..B3
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    names = {"melody": str(rng.choice(sorted(MELODY))), "chords": str(rng.choice(sorted(CHORDS))),
             "bass": str(rng.choice(sorted(BASS)))}
    drums = bool(rng.random() < 0.7)
    ev: list[tuple[int, bytes]] = []
    for ch, part, table in ((0, "melody", MELODY), (1, "chords", CHORDS), (2, "bass", BASS)):
        ev.append((0, bytes([0xC0 | ch, table[names[part]]])))
        ev.append((0, bytes([0xB0 | ch, 7, int(rng.integers(85, 115))])))  # channel volume

    def note(ch: int, key: int, start: int, length: int, vel: int) -> None:
        key = int(np.clip(key, 0, 127))
        ev.append((start, bytes([0x90 | ch, key, int(np.clip(vel, 1, 127))])))
        ev.append((start + max(1, length), bytes([0x80 | ch, key, 0])))

    def degree(d: int) -> int:  # scale degree (any integer) -> semitones above the tonic
        return 12 * (d // 7) + scale[d % 7]

    bar = 4 * TICKS
    mel = int(rng.integers(7, 12))
    for b in range(bars):
        root = prog[b % len(prog)]
        t0 = b * bar
        for d in (root, root + 2, root + 4):  # sustained chord
            note(1, tonic + degree(d), t0, bar - 20, int(rng.integers(45, 65)))
        for k in range(2):  # bass: root then fifth (or root), half notes
            note(2, tonic - 12 + degree(root + (4 if k and rng.random() < 0.5 else 0)),
                 t0 + k * 2 * TICKS, 2 * TICKS - 30, int(rng.integers(80, 100)))
        t = t0
        while t < t0 + bar:  # melody: a random walk over the scale, drawn to chord tones on the beat
            length = int(rng.choice([TICKS // 2, TICKS, TICKS, 2 * TICKS]))
            mel = int(np.clip(mel + rng.integers(-2, 3), 5, 16))
            if (t - t0) % TICKS == 0 and rng.random() < 0.5:
                mel = root + 7 + 2 * int(rng.integers(0, 3))
            if rng.random() > 0.12:
                note(0, tonic + degree(mel), t, int(length * 0.9), int(rng.integers(70, 105)))
            t += length
        if drums:  # kick on 1 and 3, snare on 2 and 4, closed hi-hat on eighths
            for k in range(8):
                tt = t0 + k * TICKS // 2
                if k % 4 == 0:
                    note(9, 36, tt, 60, 100)
                if k % 4 == 2:
                    note(9, 38, tt, 60, 90)
                note(9, 42, tt, 40, int(rng.integers(50, 75)))
    desc = {"bpm": round(bpm, 1), "key": f"{tonic}{'m' if minor else ''}", **names, "drums": drums}
    return midi_bytes(ev, tempo_us), desc


def check_available() -> None:
    """DmlmError naming the missing Debian package when fluidsynth or the soundfont is absent."""
    if shutil.which("fluidsynth") is None:
        raise DmlmError(f"the built-in noise bank renders music with 'fluidsynth', which is not "
                        f"installed: install the Debian package '{FLUIDSYNTH_PACKAGE}' "
                        f"(scripts/setup.sh does), or set noise.bank.recordings: false")
    if not SOUNDFONT.is_file():
        raise DmlmError(f"the built-in noise bank needs the General MIDI soundfont {SOUNDFONT}: "
                        f"install the Debian package '{SOUNDFONT_PACKAGE}' (scripts/setup.sh does), "
                        f"or set noise.bank.recordings: false")


def render(midi: bytes, sample_rate: int) -> np.ndarray:
    """Render MIDI bytes with fluidsynth and the GM soundfont; float64 mono at ``sample_rate``."""
    import soundfile as sf

    check_available()
    with tempfile.TemporaryDirectory(prefix="dmlm-midi-") as tmp:
        mid, wav = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
        mid.write_bytes(midi)
        cmd = ["fluidsynth", "-n", "-i", "-q", "-g", "0.6", "-r", str(int(sample_rate)),
               "-o", "synth.cpu-cores=1", "-T", "wav", "-O", "float", "-F", str(wav),
               str(SOUNDFONT), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not wav.is_file():
            raise DmlmError(f"fluidsynth failed ({' '.join(cmd)}): {proc.stderr.strip()[-500:]}")
        data, sr = sf.read(str(wav), dtype="float64", always_2d=True)
    if sr != sample_rate:
        raise DmlmError(f"fluidsynth wrote {sr} Hz audio, asked for {sample_rate} Hz")
    return data.mean(axis=1)
