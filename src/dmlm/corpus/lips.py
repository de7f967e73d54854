"""A synthetic lip video (grayscale mouth region) rendered from espeak phoneme timing.

Pipeline: phoneme intervals -> visemes (many-to-one map of espeak mnemonics; diphthongs glide
from their first to their second element) -> per-viseme articulation targets (jaw opening, lip
width, rounding/protrusion, teeth and tongue visibility) sampled at 100 Hz -> coarticulation by
dominance-weighted Gaussian smoothing (closures such as p/b/m dominate their neighbours, as in
Cohen & Massaro's model) -> one frame per 1/fps -> a drawn mouth: skin with shading, lips as two
half-ellipses with a cupid's bow, dark opening, upper/lower teeth bands, tongue, anti-aliased
edges, per-speaker looks from ``speaker_seed`` and Gaussian sensor noise from ``noise_seed``.

Only pixels leave ``render_lips``; the viseme map is exported for analysis and tests.
Everything is numpy and vectorised over frames (well under 1 ms per 88x88 frame).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["VISEMES", "phoneme_to_viseme", "render_lips", "articulation"]

VISEMES: list[str] = [
    "silence",         # 0  lips together, relaxed
    "bilabial",        # 1  p b m: lips pressed shut
    "labiodental",     # 2  f v: lower lip under upper teeth
    "dental",          # 3  th: tongue tip between teeth
    "alveolar",        # 4  t d n s z l: nearly closed, teeth visible
    "postalveolar",    # 5  sh zh ch j: protruded, squared
    "velar",           # 6  k g ng x: medium opening, neutral lips
    "glottal",         # 7  h, glottal stop: neutral opening
    "r",               # 8  r, er: slightly rounded
    "w",               # 9  w: small and tightly rounded
    "open_vowel",      # 10 a, aa, A:, V, aI, aU: jaw wide open
    "mid_vowel",       # 11 E, e, @, 3, eI: half open
    "close_front",     # 12 i, i:, I, j: spread, close
    "open_rounded",    # 13 0, O:, o@, oU, OI: open and rounded
    "close_rounded",   # 14 u:, U, U@: close and rounded
]
_V = {name: i for i, name in enumerate(VISEMES)}

# Articulation targets per viseme: opening (jaw, 0..1), width (lip spread, 0..1), rounding /
# protrusion (0..1), teeth visibility (0..1), tongue visibility (0..1), dominance (coarticulation
# weight: how strongly the viseme resists its neighbours).
_TARGETS = np.array([
    # open  width round teeth tongue dominance
    [0.00, 0.50, 0.20, 0.00, 0.00, 0.4],   # silence
    [0.00, 0.45, 0.25, 0.00, 0.00, 6.0],   # bilabial
    [0.10, 0.50, 0.05, 1.00, 0.00, 4.0],   # labiodental
    [0.22, 0.55, 0.00, 0.90, 1.00, 2.5],   # dental
    [0.16, 0.55, 0.10, 0.85, 0.30, 1.2],   # alveolar
    [0.20, 0.25, 0.80, 0.80, 0.00, 2.5],   # postalveolar
    [0.32, 0.50, 0.20, 0.40, 0.20, 0.7],   # velar
    [0.38, 0.55, 0.10, 0.30, 0.30, 0.4],   # glottal
    [0.24, 0.35, 0.60, 0.40, 0.10, 1.5],   # r
    [0.10, 0.10, 1.00, 0.00, 0.00, 3.0],   # w
    [1.00, 0.65, 0.05, 0.35, 0.40, 1.0],   # open_vowel
    [0.55, 0.62, 0.10, 0.55, 0.30, 1.0],   # mid_vowel
    [0.22, 1.00, 0.00, 0.85, 0.10, 1.2],   # close_front
    [0.62, 0.30, 0.75, 0.20, 0.20, 1.2],   # open_rounded
    [0.28, 0.12, 0.95, 0.10, 0.00, 1.5],   # close_rounded
], dtype=np.float64)
N_PARAMS = 5  # open, width, round, teeth, tongue

_EXACT: dict[str, int] = {}
for _names, _vis in [
    ("_ _: _! _^_ ; %", "silence"),
    ("p b m m- p# b# em", "bilabial"),
    ("f v f# v#", "labiodental"),
    ("T D", "dental"),
    ("t d n s z l t# d# n- l/ l# @L t[ d[ t2 d2 z/ z# s# R R2 ts dz", "alveolar"),
    ("S Z tS dZ S; Z; tS; dZ;", "postalveolar"),
    ("k g N x k# g# N2 kw gw", "velar"),
    ("h ? h# x#", "glottal"),
    ("r r- r/ 3: 3 * @r", "r"),
    ("w W hw", "w"),
    ("a aa A: A A@ a# V aI aU aI@ aI3 aU@ a2 A# a:", "open_vowel"),
    ("E e @ @2 @5 @@ E2 E3 eI e@ e: @- E:", "mid_vowel"),
    ("i i: I I# I2 j i@ i@3 iI i#", "close_front"),
    ("0 O: O O@ o@ oU OI O2 o 0# o: oU#", "open_rounded"),
    ("u: U U@ u u# uI", "close_rounded"),
]:
    for _n in _names.split():
        _EXACT[_n] = _V[_vis]

# Diphthongs glide from the first viseme (the one phoneme_to_viseme reports) to the second.
_GLIDES: dict[str, tuple[int, int]] = {
    "aI": (_V["open_vowel"], _V["close_front"]),
    "aI@": (_V["open_vowel"], _V["mid_vowel"]),
    "aI3": (_V["open_vowel"], _V["r"]),
    "aU": (_V["open_vowel"], _V["close_rounded"]),
    "aU@": (_V["open_vowel"], _V["mid_vowel"]),
    "eI": (_V["mid_vowel"], _V["close_front"]),
    "oU": (_V["open_rounded"], _V["close_rounded"]),
    "OI": (_V["open_rounded"], _V["close_front"]),
    "i@": (_V["close_front"], _V["mid_vowel"]),
    "i@3": (_V["close_front"], _V["r"]),
    "e@": (_V["mid_vowel"], _V["mid_vowel"]),
    "U@": (_V["close_rounded"], _V["mid_vowel"]),
    "A@": (_V["open_vowel"], _V["r"]),
    "O@": (_V["open_rounded"], _V["r"]),
    "o@": (_V["open_rounded"], _V["r"]),
}
_STRIP = "0123456789#:;[]/-!^',"
_VOWEL_CHARS = set("aAeEiIoOuUV@3Y0")


def phoneme_to_viseme(ph: str) -> int:
    """The viseme index (into VISEMES) of an espeak phoneme mnemonic; unknown names are mapped by
    stripping length/variant marks (``t[`` -> ``t``) and then by their first character."""
    ph = ph.strip()
    if ph in _EXACT:
        return _EXACT[ph]
    if not ph or ph.startswith("_"):
        return _V["silence"]
    base = ph
    while base and base[-1] in _STRIP:
        base = base[:-1]
        if base in _EXACT:
            return _EXACT[base]
    for n in (3, 2, 1):  # longest known prefix (e.g. "aI" of "aI@2")
        if len(ph) > n and ph[:n] in _EXACT:
            return _EXACT[ph[:n]]
    if ph[0] in _VOWEL_CHARS:
        return _V["mid_vowel"]
    return _V["velar"]  # an unknown consonant: neutral, medium opening


def _segments(phonemes, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, visemes) of the viseme segments, sorted; diphthongs split 60/40."""
    starts, vis = [], []
    last_end = 0.0
    for start, end, ph in phonemes:
        start, end = float(start), max(float(start), float(end))
        if start >= duration_s or end < 0:
            continue
        glide = _GLIDES.get(ph.strip())
        if glide is not None and end > start:
            mid = start + 0.6 * (end - start)
            starts += [start, mid]
            vis += list(glide)
        else:
            starts.append(start)
            vis.append(phoneme_to_viseme(ph))
        last_end = max(last_end, end)
    if starts:
        starts.append(last_end)  # after the last phoneme: silence
        vis.append(_V["silence"])
    order = np.argsort(np.asarray(starts, dtype=np.float64), kind="stable")
    return np.asarray(starts, dtype=np.float64)[order], np.asarray(vis, dtype=np.int64)[order]


def articulation(phonemes, duration_s: float, fps: int = 25, sigma_s: float = 0.035,
                 rate_hz: int = 100) -> np.ndarray:
    """Smoothed articulation parameters per video frame, float (T, 5): open, width, round, teeth,
    tongue. T = ceil(duration_s * fps)."""
    n_frames = int(math.ceil(duration_s * fps - 1e-9))
    n = max(1, int(math.ceil(duration_s * rate_hz)))
    t = (np.arange(n) + 0.5) / rate_hz
    starts, vis = _segments(phonemes, duration_s)
    idx = np.full(n, _V["silence"], dtype=np.int64)
    if len(starts):
        k = np.searchsorted(starts, t, side="right") - 1
        idx = np.where(k >= 0, vis[np.clip(k, 0, None)], _V["silence"])
    targets = _TARGETS[idx]
    params, weight = targets[:, :N_PARAMS], targets[:, N_PARAMS]
    # dominance-weighted Gaussian smoothing (coarticulation)
    sig = max(sigma_s * rate_hz, 1e-3)
    half = int(math.ceil(3 * sig))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sig) ** 2)
    def smooth_(x):  # "same"-size convolution, also for signals shorter than the kernel
        return np.convolve(x, kernel, mode="full")[half:half + n]

    num = np.stack([smooth_(params[:, j] * weight) for j in range(N_PARAMS)], axis=1)
    den = smooth_(weight)[:, None]
    smooth = num / np.maximum(den, 1e-9)
    # frame centres -> linear interpolation of the 100 Hz track
    tf = (np.arange(n_frames) + 0.5) / fps
    out = np.stack([np.interp(tf, t, smooth[:, j]) for j in range(N_PARAMS)], axis=1)
    return out.reshape(n_frames, N_PARAMS)


def _speaker_look(speaker_seed: int, size: int) -> dict:
    rng = np.random.default_rng([int(speaker_seed) & 0xFFFFFFFF, 0x11B5])
    s = size / 88.0
    skin = rng.uniform(120, 200)
    return dict(
        skin=skin,
        lip=skin - rng.uniform(30, 60),  # >= 60: lips stay lighter than the opening
        interior=rng.uniform(8, 30),
        teeth=rng.uniform(175, 235),
        tongue_shade=rng.uniform(0.55, 0.8),
        half_width=rng.uniform(22, 29) * s,
        max_open=rng.uniform(10, 15) * s,
        upper=rng.uniform(4.0, 7.0) * s,
        lower=rng.uniform(5.0, 9.0) * s,
        cx=(size - 1) / 2 + rng.uniform(-3, 3) * s,
        cy=(size - 1) / 2 + rng.uniform(0, 6) * s,
        tilt=rng.uniform(-0.04, 0.04),
        gain_open=rng.uniform(0.8, 1.15),
        gain_width=rng.uniform(0.8, 1.2),
        shade=rng.uniform(-25, 25),       # vertical lighting gradient over the image
        vignette=rng.uniform(10, 35),
        bow=rng.uniform(0.1, 0.3),         # cupid's bow depth
        sigma=rng.uniform(0.028, 0.045),   # coarticulation time scale, s
    )


def _ellipse_cover(dx, dy, a, b):
    """Anti-aliased coverage (0..1) of an axis-aligned ellipse with semi-axes a, b (broadcast)."""
    a2, b2 = a * a, b * b
    f = dx * dx / a2 + dy * dy / b2 - 1.0
    g = 2.0 * np.sqrt(dx * dx / (a2 * a2) + dy * dy / (b2 * b2)) + 1e-6
    return np.clip(0.5 - f / g, 0.0, 1.0)


def render_lips(phonemes: list[tuple[float, float, str]], duration_s: float, speaker_seed: int,
                fps: int = 25, size: int = 88, noise_seed: int = 0) -> np.ndarray:
    """The mouth video for an utterance: uint8 (T, size, size), T = ceil(duration_s * fps)."""
    look = _speaker_look(speaker_seed, size)
    art = articulation(phonemes, duration_s, fps=fps, sigma_s=look["sigma"]).astype(np.float32)
    n_frames = len(art)
    out = np.empty((n_frames, size, size), dtype=np.uint8)
    if n_frames == 0:
        return out
    L = {k: np.float32(v) for k, v in look.items()}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # static background: skin with a lighting gradient and a vignette
    r2 = ((xx - (size - 1) / 2) ** 2 + (yy - (size - 1) / 2) ** 2) / (size / 2) ** 2
    background = L["skin"] + L["shade"] * (yy / (size - 1) - 0.5) - L["vignette"] * r2
    noise_rng = np.random.default_rng([int(noise_seed) & 0xFFFFFFFF, 0x5E45])
    chunk = 64
    for c0 in range(0, n_frames, chunk):
        a_ = art[c0:c0 + chunk]
        op, wd, rd, th, tg = (a_[:, j][:, None, None] for j in range(N_PARAMS))
        m = len(a_)
        h = op * L["max_open"] * L["gain_open"]                      # half height of the opening
        hw = L["half_width"] * (0.78 + 0.38 * wd * L["gain_width"]) * (1.0 - 0.28 * rd)
        cy = L["cy"] + 0.35 * h                                         # the jaw drops the lower lip
        dx = xx[None] - L["cx"]
        dy = yy[None] - cy - L["tilt"] * dx
        up = dy < 0
        thick = np.where(up, L["upper"], L["lower"]) * (1.0 + 0.5 * rd)
        bow = 1.0 - L["bow"] * np.exp(-(dx / (0.12 * hw)) ** 2) * up  # cupid's bow dip, upper lip
        b_out = (h + thick) * np.where(up, bow, 1.0)
        lips = _ellipse_cover(dx, dy, hw, b_out)
        img = background[None] * (1 - lips) + (L["lip"] + 10.0 * (1 - np.abs(dy) / (b_out + 1e-3)) * (~up)) * lips
        # the line where closed lips meet
        line = 0.5 * np.exp(-(dy / 0.8) ** 2) * np.clip(1.3 - np.abs(dx) / hw, 0, 1) * lips
        img = img * (1 - line) + L["interior"] * line
        # the opening, with teeth and tongue inside it
        ai = hw * 0.9
        hb = np.maximum(h, 1e-2)
        inside = _ellipse_cover(dx, dy, ai, hb) * np.clip(h / 0.6, 0, 1)
        cav = np.full_like(img, L["interior"]) + 8.0 * (dy / hb)
        tooth_h = th * np.minimum(0.55 * h, 4.0 * L["max_open"] / 10)
        upper_teeth = np.clip(tooth_h - (dy + h), 0, 1) * (np.abs(dx) < 0.62 * ai)
        lower_teeth = np.clip(0.5 * tooth_h - (h - dy), 0, 1) * (np.abs(dx) < 0.5 * ai)
        tongue = _ellipse_cover(dx, dy - h, 0.55 * ai, np.maximum(tg * 0.75 * h, 1e-2)) * (tg > 0.02)
        cav = cav * (1 - tongue) + (L["lip"] * L["tongue_shade"]) * tongue
        teeth = np.maximum(upper_teeth, lower_teeth)
        cav = cav * (1 - teeth) + L["teeth"] * teeth
        img = img * (1 - inside) + cav * inside
        img += noise_rng.normal(0.0, 3.0, size=(m, size, size)).astype(np.float32)
        np.clip(img, 0, 255, out=img)
        out[c0:c0 + m] = (img + 0.5).astype(np.uint8)
    return out
