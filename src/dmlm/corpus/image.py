"""Render the 3 equations of an utterance into one grayscale image.

White background, black DejaVu Sans text (the font ships inside matplotlib, so no system font is
needed). Exponents are drawn raised and smaller, as LaTeX would. Each equation gets a random,
non-overlapping spot. Placement keeps the equations in separate horizontal bands (their vertical
extents do not overlap, with a gap), so each equation is one text line and the reading order is
top to bottom; the authors' generator only asked for non-overlapping boxes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dmlm.corpus.equations import Equation

FONT_SIZE = 20  # px; shrunk per equation only when the equation would not fit the width
MIN_FONT_SIZE = 11
SUPERSCRIPT_SCALE = 0.7
MARGIN = 4  # px kept free at the image border
GAP = 8  # px kept free between two equations' bands
PLACEMENT_TRIES = 200


@functools.lru_cache(maxsize=None)
def font_path() -> str:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if path.exists():
        return str(path)
    from matplotlib import font_manager

    return font_manager.findfont("DejaVu Sans")


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(), size)


@dataclass
class Layout:
    """One equation's text pieces and where they go: ``box`` = (x0, y0, x1, y1) of its ink."""

    pieces: list  # [(text, font, dx, dy)] relative to the origin (top-left of the line box)
    width: int
    height: int
    box: tuple[int, int, int, int] | None = None


def _measure(equation: Equation, size: int) -> Layout:
    main, sup = _font(size), _font(max(6, round(size * SUPERSCRIPT_SCALE)))
    ascent, _ = main.getmetrics()
    pieces, x = [], 0.0
    for text, is_sup in equation.segments():
        font = sup if is_sup else main
        # baseline of the main text at y=ascent; superscripts sit ~0.45 em higher
        dy = -round(0.42 * size) if is_sup else 0
        pieces.append((text, font, x, dy))
        x += font.getlength(text)
    # ink extent relative to drawing the main text at (0, 0) with anchor "la" (left, ascender)
    x0 = y0 = 10**9
    x1 = y1 = -(10**9)
    for text, font, dx, dy in pieces:
        l, t, r, b = font.getbbox(text, anchor="ls")  # relative to the baseline
        x0, x1 = min(x0, dx + l), max(x1, dx + r)
        y0, y1 = min(y0, ascent + dy + t), max(y1, ascent + dy + b)
    # shift so that the ink starts at (0, 0)
    shifted = [(t, f, dx - x0, ascent + dy - y0) for t, f, dx, dy in pieces]
    return Layout(shifted, int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0)))


def layout_equations(equations, width: int, height: int, rng: np.random.Generator) -> list[Layout]:
    """Measure and place the equations (deterministic given ``rng``)."""
    layouts = []
    for eq in equations:
        size = FONT_SIZE
        lay = _measure(eq, size)
        while lay.width > width - 2 * MARGIN and size > MIN_FONT_SIZE:
            size -= 1
            lay = _measure(eq, size)
        layouts.append(lay)
    total = sum(l.height for l in layouts) + GAP * (len(layouts) - 1) + 2 * MARGIN
    if total > height or any(l.width > width - 2 * MARGIN for l in layouts):
        raise ValueError(f"equations do not fit a {width}x{height} image")
    placed: list[tuple[int, int]] = []  # vertical bands taken
    tops = None
    for _ in range(PLACEMENT_TRIES):
        tops, placed = [], []
        ok = True
        for lay in layouts:
            y = int(rng.integers(MARGIN, height - MARGIN - lay.height + 1))
            band = (y - GAP, y + lay.height + GAP)
            if any(band[0] < b1 and b0 < band[1] for b0, b1 in placed):
                ok = False
                break
            placed.append((y, y + lay.height))
            tops.append(y)
        if ok:
            break
    else:  # fall back to evenly spaced bands in random order
        free = height - 2 * MARGIN - sum(l.height for l in layouts)
        step = free / (len(layouts) + 1)
        order = rng.permutation(len(layouts))
        tops, y = [0] * len(layouts), MARGIN
        for k in order:
            y += step
            tops[k] = int(y)
            y += layouts[k].height
    for lay, y in zip(layouts, tops):
        x = int(rng.integers(MARGIN, width - MARGIN - lay.width + 1))
        lay.box = (x, y, x + lay.width, y + lay.height)
    return layouts


def render_image(
    equations,
    width: int = 450,
    height: int = 200,
    rng: np.random.Generator | None = None,
    return_boxes: bool = False,
):
    """uint8 (height, width) image of the equations; with ``return_boxes`` also their ink boxes
    (x0, y0, x1, y1), in the order of ``equations``."""
    rng = rng if rng is not None else np.random.default_rng(0)
    layouts = layout_equations(equations, width, height, rng)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    for lay in layouts:
        x, y = lay.box[0], lay.box[1]
        for text, font, dx, dy in lay.pieces:
            draw.text((x + dx, y + dy), text, font=font, fill=0, anchor="ls")
    arr = np.asarray(img, dtype=np.uint8).copy()
    if return_boxes:
        return arr, [lay.box for lay in layouts]
    return arr
