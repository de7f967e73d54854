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
import tempfile
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.noise.musan import musan_sources
from dmlm.noise.recordings import check_packages, recording_sources
from dmlm.noise.synth import SAMPLE_RATE, babble, coloured_noise, hum, midi_music, music, normalize, source_rng
from dmlm.storage import atomic_path, ragged_paths, save_npy, write_table

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


def builtin_sources(settings: dict) -> list[tuple[str, str, np.ndarray, dict]]:
    """The built-in bank's (name, category, float32 audio, meta) items; ``meta`` fills the TSV's
    ``package``, ``origin``, ``start_s``, ``orig_sr`` and ``licence`` columns.

    - noise: white, pink and brown noise, 50 and 60 Hz hum (synthesized), then recordings;
    - music: ``music_sources`` pieces composed as MIDI and rendered by fluidsynth with the GM
      soundfont (:mod:`dmlm.noise.midi`), then recordings; without recordings, synthesized music;
    - speech: ``babble_sources`` babbles of 4-8 espeak-ng talkers (voices from ``dmlm.noise.synth.BABBLE_VOICES``).

    Recordings (``recordings``, default true): ``recordings_per_category`` (default 8) files drawn
    with the seed from ``dmlm.noise.recordings.RECORDINGS`` per category (packages ``sonic-pi-samples``, CC0, and
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
        out.append((name, category, normalize(make(source_rng(seed, name))),
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


def _count(settings: dict, key: str, default: int, minimum: int = 0) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DmlmError(f"settings: 'noise.bank.{key}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def build_builtin_bank(out_prefix, settings: dict) -> list[tuple[str, str, float]]:
    """Write the built-in bank; returns (name, category, seconds) per source."""
    return _write_bank(out_prefix, builtin_sources(settings))


def build_bank(settings: dict, out_prefix) -> list[tuple[str, str, float]]:
    """Dispatch on settings: ``{"path": folder, ...}`` -> MUSAN; ``{"name", "seconds_per_source",
    ...}`` -> the built-in bank, under any name (presets keep banks with other settings apart by
    name, dmlm.owners)."""
    if not isinstance(settings, dict):
        raise DmlmError(f"settings: 'noise.bank' must be a mapping, got {settings!r}")
    if settings.get("path"):
        return _write_bank(out_prefix, musan_sources(os.path.expanduser(str(settings["path"])), settings))
    if "seconds_per_source" in settings:
        return build_builtin_bank(out_prefix, settings)
    raise DmlmError(f"settings: 'noise.bank' needs 'path' (a MUSAN folder) or 'seconds_per_source' "
                    f"(a built-in bank, e.g. name 'builtin'), got {settings!r}")
