"""Mix noise into a corpus split at a target SNR.

For each utterance of ``corpus_dir`` (``manifest.tsv`` + ragged ``audio``), decide whether it is
noised and at which SNR, pick a noise source and offset, scale the noise so that the speech-to-noise
power ratio over the *noisy window* equals the target SNR exactly, and avoid clipping with one
global factor per utterance. Output: ragged float32 ``out_prefix`` (same lengths as the input) and
``<out_prefix>.snr.tsv``.

Randomness (independent of order and of how the split is cut into jobs):

- whether the utterance is noised and the SNR: ``default_rng([seed, crc32(id), crc32(condition)])``
  where the condition is the (snrs, fraction_noisy) pair, so each recipe draws its own subset;
- the noise source and offset: ``default_rng([seed, crc32(id)])``, the same for every condition,
  so the fixed test conditions (``snr20``, ``snr0``, ``snr-10``, ...) differ only in the noise level
  (paired comparison across SNRs);
- the window of the ``random_segment`` placement:
  ``default_rng([seed, crc32(id), crc32("random_segment")])``, also the same for every condition.

Placements (``placement``; the noisy windows, see :func:`noise_windows`):

- ``second_half`` (the authors'): the second half of each spoken equation, ``[mid, end]``;
- ``whole``: the whole utterance, silences included;
- ``random_segment``: one window of ``segment_fraction`` (default 0.5) times the spoken span (from
  the start of the first spoken equation to the end of the last), at a uniformly random start
  within that span. A window holding only silence (possible when it is shorter than the 1 s gap
  between the equations) is redrawn, up to 20 times.

``<out_prefix>.snr.tsv`` columns: ``id``, ``noise`` (source name), ``offset_s`` (where in the
source the noise track starts), ``target_snr``, ``measured_snr``, ``gain``, ``scale`` (the global
anti-clipping factor), ``windows`` (JSON ``[[start_s, end_s], ...]`` of the noisy windows); all
empty for a clean utterance.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, atomic_path, ragged_paths, read_table, save_npy, write_table

SAMPLE_RATE = 16000
PEAK = 0.99
_SEGMENT_KEY = zlib.crc32(b"random_segment")
PLACEMENTS = ("second_half", "whole", "random_segment")
SEGMENT_FRACTION = 0.5  # default length of the random_segment window, as a fraction of the spoken span


# ----------------------------------------------------------------------------- windows

def noise_windows(segments, duration: float, placement: str, rng: np.random.Generator | None = None,
                  segment_fraction: float = SEGMENT_FRACTION) -> list[tuple[float, float]]:
    """The noisy windows in seconds: ``[mid, end]`` of each spoken segment (``second_half``), the
    whole utterance (``whole``), or one random window of ``segment_fraction`` of the spoken span
    inside that span (``random_segment``; needs ``rng``)."""
    if placement == "whole":
        return [(0.0, float(duration))]
    if placement == "second_half":
        return [((float(s) + float(e)) / 2.0, float(e)) for s, e in segments]
    if placement == "random_segment":
        if rng is None:
            raise ValueError("the random_segment placement needs a random generator")
        first = min(float(s) for s, _ in segments)
        last = min(max(float(e) for _, e in segments), float(duration))
        length = float(segment_fraction) * (last - first)
        start = first + float(rng.uniform(0.0, 1.0)) * (last - first - length)
        return [(start, start + length)]
    raise DmlmError(f"settings: 'noise.placement' must be one of {PLACEMENTS}, got {placement!r}")


def window_ranges(windows, n_samples: int, sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """``windows`` (seconds) as sorted, merged, non-empty sample ranges ``[a, b)`` within the signal."""
    spans = []
    for start, end in windows:
        a = max(0, min(n_samples, int(round(float(start) * sample_rate))))
        b = max(0, min(n_samples, int(round(float(end) * sample_rate))))
        if b > a:
            spans.append((a, b))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _complement(ranges, n_samples: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for a, b in ranges:
        if a > pos:
            out.append((pos, a))
        pos = b
    if pos < n_samples:
        out.append((pos, n_samples))
    return out


def window_indices(windows, n_samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sorted sample indices covered by ``windows`` (seconds), clipped to the signal."""
    ranges = window_ranges(windows, n_samples, sample_rate)
    if not ranges:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges])


def _energy(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.dot(x, x))


def measured_snr(clean, mixed, windows, sample_rate: int = SAMPLE_RATE, scale: float | None = None) -> float:
    """SNR in dB of ``mixed`` over ``windows`` (seconds), the noise being ``mixed - scale * clean``.

    ``scale`` is the global anti-clipping factor applied to the whole utterance; when not given it
    is estimated by least squares from the samples outside the windows (1.0 if there are none, as
    with the ``whole`` placement, or if they are all silent).
    """
    clean = np.asarray(clean)
    mixed = np.asarray(mixed)
    if clean.shape != mixed.shape:
        raise ValueError(f"clean and mixed differ in shape: {clean.shape} vs {mixed.shape}")
    ranges = window_ranges(windows, len(clean), sample_rate)
    if not ranges:
        return float("nan")
    if scale is None:
        num = den = 0.0
        for a, b in _complement(ranges, len(clean)):
            c = clean[a:b].astype(np.float64)
            num += float(np.dot(mixed[a:b].astype(np.float64), c))
            den += float(np.dot(c, c))
        scale = num / den if den > 0 else 1.0
    p_s = p_n = 0.0
    for a, b in ranges:
        speech = scale * clean[a:b].astype(np.float64)
        p_s += _energy(speech)
        p_n += _energy(mixed[a:b].astype(np.float64) - speech)
    if p_n == 0:
        return float("inf")
    if p_s == 0:
        return float("-inf")
    return 10.0 * math.log10(p_s / p_n)


# ----------------------------------------------------------------------------- the mixer

def looped(src: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` samples of ``src`` from ``start``, wrapping around (the noise looped as a track)."""
    n = len(src)
    start %= n
    if start + length <= n:
        return src[start:start + length]
    reps = -(-(start + length) // n)
    return np.tile(src, reps)[start:start + length]


def condition_hash(snrs, fraction: float) -> int:
    """A stable hash of the (snrs, fraction_noisy) recipe (Python's hash() is salted per process)."""
    key = json.dumps([[float(s) for s in snrs], float(fraction)])
    return zlib.crc32(key.encode())


def _settings(settings: dict):
    for key in ("placement", "snrs", "fraction_noisy", "seed"):
        if key not in settings:
            raise DmlmError(f"settings: missing key '{key}' for mix")
    placement = settings["placement"]
    if placement not in PLACEMENTS:
        raise DmlmError(f"settings: 'placement' must be one of {PLACEMENTS}, got {placement!r}")
    try:
        snrs = [float(s) for s in (settings["snrs"] or [])]
        fraction = float(settings["fraction_noisy"])
        seed = int(settings["seed"])
    except (TypeError, ValueError) as err:
        raise DmlmError(f"settings: bad mix settings {settings!r}: {err}") from err
    if not 0.0 <= fraction <= 1.0:
        raise DmlmError(f"settings: 'fraction_noisy' must be in [0, 1], got {fraction}")
    if fraction > 0 and not snrs:
        raise DmlmError(f"settings: 'fraction_noisy' is {fraction} but 'snrs' is empty")
    if not all(math.isfinite(s) for s in snrs):
        raise DmlmError(f"settings: 'snrs' must be finite numbers, got {settings['snrs']!r}")
    sr = int(settings.get("sample_rate", SAMPLE_RATE))
    if sr != SAMPLE_RATE:
        raise DmlmError(f"settings: 'sample_rate' {sr} is not supported; noise banks are {SAMPLE_RATE} Hz")
    categories = settings.get("categories")
    seg_fraction = settings.get("segment_fraction", SEGMENT_FRACTION)
    if isinstance(seg_fraction, bool) or not isinstance(seg_fraction, (int, float)) \
            or not 0.0 < float(seg_fraction) <= 1.0:
        raise DmlmError(f"settings: 'segment_fraction' must be a number in (0, 1], got {seg_fraction!r}")
    return placement, snrs, fraction, seed, categories, float(seg_fraction)


def _load_noise(noise_prefix, categories):
    try:
        bank = Ragged.load(noise_prefix, mmap=True)  # a MUSAN bank can be many GB
    except FileNotFoundError as err:
        raise DmlmError(str(err)) from err
    table_path = Path(f"{noise_prefix}.tsv")
    if table_path.exists():
        table = read_table(table_path)
        names = [str(x) for x in table["name"]]
        cats = [str(x) for x in table["category"]] if "category" in table else [""] * len(names)
        if len(names) != len(bank):
            raise DmlmError(f"{table_path}: {len(names)} rows but the bank has {len(bank)} sources")
    else:
        names, cats = [f"source{i}" for i in range(len(bank))], [""] * len(bank)
    keep = [i for i in range(len(bank)) if not categories or cats[i] in categories]
    if not keep:
        raise DmlmError(f"noise bank {noise_prefix}: no sources"
                        + (f" in categories {categories}" if categories else ""))
    for i in keep:
        if len(bank[i]) == 0:
            raise DmlmError(f"noise bank {noise_prefix}: source {names[i]!r} is empty")
    sources = [np.asarray(bank[i], dtype=np.float32) for i in keep]
    return sources, [names[i] for i in keep]


def _parse_segments(value, row_id, manifest):
    try:
        seg = json.loads(value) if isinstance(value, str) else value
        seg = [(float(s), float(e)) for s, e in seg]
    except (TypeError, ValueError) as err:
        raise DmlmError(f"{manifest}: utterance {row_id}: bad 'segments' {value!r}: {err}") from err
    if not seg:
        raise DmlmError(f"{manifest}: utterance {row_id}: 'segments' is empty")
    for s, e in seg:
        if not e > s >= 0:
            raise DmlmError(f"{manifest}: utterance {row_id}: segment [{s}, {e}] is not a valid interval")
    return seg


def mix_utterance(speech: np.ndarray, ranges, noise_src: np.ndarray, offset: int,
                  snr_db: float) -> tuple[np.ndarray, float, float]:
    """Mix ``noise_src`` into ``speech`` over the sample ``ranges`` (from ``window_ranges``).

    The noise is a track under the whole utterance starting at sample ``offset`` of the source
    (looped), so sample t gets ``noise_src[(offset + t) % len]``. Returns (mixture float32, noise
    gain, global scale). The speech/noise power ratio over the ranges is ``snr_db`` exactly (before
    float32 rounding); the global scale (<= 1) keeps |mixture| <= 0.99 and multiplies the whole
    utterance, so parts outside the ranges are the clean audio times that one factor.
    """
    s_parts = [np.asarray(speech[a:b], dtype=np.float64) for a, b in ranges]
    n_parts = [looped(noise_src, offset + a, b - a).astype(np.float64) for a, b in ranges]
    p_s = sum(_energy(x) for x in s_parts)
    p_n = sum(_energy(x) for x in n_parts)
    if p_n <= 0:
        raise ValueError("silent noise window")
    gain = math.sqrt(p_s / (p_n * 10.0 ** (snr_db / 10.0)))
    mixed_parts = [x + gain * y for x, y in zip(s_parts, n_parts)]
    peak = max([float(np.max(np.abs(m))) for m in mixed_parts]
               + [float(np.max(np.abs(speech[a:b]))) for a, b in _complement(ranges, len(speech))])
    scale = PEAK / peak if peak > PEAK else 1.0
    out = np.array(speech, dtype=np.float32, copy=True)
    if scale != 1.0:
        out *= np.float32(scale)
    for (a, b), m in zip(ranges, mixed_parts):
        out[a:b] = m * scale if scale != 1.0 else m
    return out, gain, scale


def mix_split(corpus_dir, noise_prefix, out_prefix, settings: dict) -> dict:
    """Mix one corpus split; see the module docstring. Returns a small summary dict."""
    from tqdm import tqdm

    placement, snrs, fraction, seed, categories, seg_fraction = _settings(settings)
    corpus_dir = Path(corpus_dir)
    manifest_path = corpus_dir / "manifest.tsv"
    try:
        manifest = read_table(manifest_path)
        audio = Ragged.load(corpus_dir / "audio")
    except FileNotFoundError as err:
        raise DmlmError(str(err)) from err
    for col in ("id", "segments"):
        if col not in manifest.columns:
            raise DmlmError(f"{manifest_path}: missing column '{col}'")
    if len(manifest) != len(audio):
        raise DmlmError(f"{manifest_path}: {len(manifest)} rows but {audio.source} has {len(audio)} items")
    if "duration" in manifest.columns and len(manifest):
        try:
            stated = float(np.sum(manifest["duration"].astype(float)))
        except ValueError:
            stated = None
        actual = len(audio.data) / SAMPLE_RATE
        if stated and abs(actual - stated) > 0.02 * stated + 0.1:
            raise DmlmError(f"{audio.source}: {actual:.1f} s of audio at {SAMPLE_RATE} Hz but the "
                            f"manifest's durations sum to {stated:.1f} s; is the corpus at {SAMPLE_RATE} Hz?")
    if audio.data.dtype != np.float32:
        raise DmlmError(f"{audio.source}: expected float32 audio, found {audio.data.dtype}")

    noisy_any = fraction > 0
    if noisy_any:
        sources, names = _load_noise(noise_prefix, categories)
    cond = condition_hash(snrs, fraction)

    rows = []
    data_path, offsets_path = ragged_paths(out_prefix)
    n_total = len(audio.data)
    n_noisy = 0
    with atomic_path(data_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_total,))
        for i in tqdm(range(len(manifest)), desc=f"mix {Path(str(out_prefix)).name}", unit="utt",
                      file=sys.stderr, mininterval=2.0):
            uid = str(manifest["id"].iat[i])
            a, b = int(audio.offsets[i]), int(audio.offsets[i + 1])
            speech = audio.data[a:b]
            row = {"id": uid, "noise": "", "offset_s": np.nan, "target_snr": np.nan,
                   "measured_snr": np.nan, "gain": 0.0, "scale": 1.0, "windows": ""}
            uid_crc = zlib.crc32(uid.encode())
            noised = False
            if noisy_any:
                crng = np.random.default_rng([seed, uid_crc, cond])
                noised = bool(crng.random() < fraction)
                snr = snrs[int(crng.integers(len(snrs)))] if noised else None
            if not noised:
                out[a:b] = speech
                rows.append(row)
                continue
            segments = _parse_segments(manifest["segments"].iat[i], uid, manifest_path)
            wrng = np.random.default_rng([seed, uid_crc, _SEGMENT_KEY])
            for _attempt in range(20 if placement == "random_segment" else 1):
                windows = noise_windows(segments, (b - a) / SAMPLE_RATE, placement, wrng, seg_fraction)
                ranges = window_ranges(windows, b - a)
                if ranges and any(np.any(speech[x:y]) for x, y in ranges):
                    break
            if not ranges:
                raise DmlmError(f"{manifest_path}: utterance {uid}: the noisy window {windows} "
                                f"lies outside its {(b - a) / SAMPLE_RATE:.2f} s of audio")
            if not any(np.any(speech[x:y]) for x, y in ranges):
                raise DmlmError(f"{manifest_path}: utterance {uid}: the audio is silent in the noisy "
                                f"window {windows}; check 'segments'")
            nrng = np.random.default_rng([seed, uid_crc])
            for _attempt in range(20):  # a real recording may hold digital silence: redraw
                k = int(nrng.integers(len(sources)))
                offset = int(nrng.integers(len(sources[k])))
                try:
                    mixed, gain, scale = mix_utterance(speech, ranges, sources[k], offset, snr)
                    break
                except ValueError:
                    continue
            else:
                raise DmlmError(f"noise bank {noise_prefix}: 20 draws of silent noise for utterance {uid}")
            out[a:b] = mixed
            n_noisy += 1
            row.update(noise=names[k], offset_s=round(offset / SAMPLE_RATE, 7), target_snr=snr,
                       measured_snr=round(measured_snr(speech, mixed, windows, SAMPLE_RATE, scale=scale), 4),
                       gain=gain, scale=scale,
                       windows=json.dumps([[round(x / SAMPLE_RATE, 5), round(y / SAMPLE_RATE, 5)]
                                           for x, y in ranges]))
            rows.append(row)
        out.flush()
        del out
    save_npy(offsets_path, np.asarray(audio.offsets, dtype=np.int64))
    write_table(f"{out_prefix}.snr.tsv", rows)
    return {"utterances": len(rows), "noisy": n_noisy}
