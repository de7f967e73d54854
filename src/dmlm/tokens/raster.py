"""Image "raster" tokens (encoder ``raster``): an ORACLE character grid of the image's symbols.

This is the 2-D "raster" representation of the study's open question, built as an **oracle**:
it does not look at the pixels at all. It reads the generator's own strings (the manifest's
``equations`` column: each equation's display text) and the renderer's ink boxes (the manifest's
``boxes`` column, ``[x0, y0, x1, y1]`` per equation, written by :mod:`dmlm.corpus.build`) and lays
the characters out as a perfect reader of the image would. It answers "what if the image encoder
were perfect and kept the 2-D layout?"; its numbers are an upper reference, not an encoder result.

Grid: one row per text line (an equation; the renderer keeps each equation one line in its own
horizontal band), rows ordered top to bottom by the boxes' vertical centres. A row has
``ceil(width / char_width)`` cells; an equation's display characters fill consecutive cells
starting at column ``round(x0 / char_width)`` (its left ink edge quantised to a character width),
moved left if the text would run past the last cell. Cells with no character, and the spaces of
the display text, are the blank id; each row ends with the row-separator id. Every image of a
split therefore gives ``n_rows * (columns + 1)`` tokens.

Display characters are taken as the manifest writes them (``^`` marks an exponent, ``/`` a
fraction, ``log`` is spelled out), so decoding a grid (:func:`decode`) gives back each
equation's display string exactly, in reading order.

Vocabulary (fixed, deterministic, independent of the data): id 0 blank (``" "``), id 1 row
separator (``"\\n"``), then the characters of :data:`ALPHABET`. The codebook file is an ordinary
:class:`~dmlm.tokens.codebook.Codebook` whose "centroids" are the Unicode code points of the ids'
characters (shape ``(vocab_size, 1)``), so the generic loader reads it; ``fit`` reads the
manifest only to check that every character is in the vocabulary and to record the grid size.
"""

from __future__ import annotations

import json
import math
import os
import string
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import Codebook, positive_int, progress

ENCODER = "raster"
BLANK, ROW_SEPARATOR = " ", "\n"
ALPHABET = string.digits + string.ascii_lowercase + "+-=/^"
VOCAB = BLANK + ROW_SEPARATOR + ALPHABET
DEFAULT_CHAR_WIDTH = 12  # px: DejaVu Sans at the renderer's 20 px has ~12.7 px digit advances
BLANK_ID, ROW_ID = 0, 1


def _char_width(settings: dict) -> int:
    if "char_width" not in settings:
        return DEFAULT_CHAR_WIDTH
    return positive_int(settings, "char_width", "image")


def manifest_path(media_path: str | os.PathLike) -> Path:
    """The ``manifest.tsv`` next to a split's ``images.npy``."""
    return Path(media_path).with_name("manifest.tsv")


def read_layout(media_path: str | os.PathLike) -> tuple[list[list[str]], list[list[list[int]]], tuple[int, int]]:
    """(display strings, boxes, (height, width)) of every image of the split at ``media_path``."""
    from dmlm.tokens.image import load_images
    from dmlm.tokens.text import read_text_column

    images = load_images(media_path)
    manifest = manifest_path(media_path)
    eq_cells = read_text_column(manifest, "equations")
    try:
        box_cells = read_text_column(manifest, "boxes")
    except DmlmError as err:
        raise DmlmError(
            f"{err}; the raster oracle needs the renderer's boxes (a corpus made before the "
            "`boxes` column existed must be generated again)"
        ) from None
    if len(eq_cells) != len(images):
        raise DmlmError(f"{manifest} has {len(eq_cells)} rows but {media_path} has {len(images)} images")
    equations, boxes = [], []
    for i, (e, b) in enumerate(zip(eq_cells, box_cells)):
        try:
            eqs, bxs = json.loads(e), json.loads(b)
        except ValueError as err:
            raise DmlmError(f"{manifest}: row {i + 1}: `equations` or `boxes` is not JSON ({err})") from None
        if (not isinstance(eqs, list) or not isinstance(bxs, list) or len(eqs) != len(bxs)
                or not all(isinstance(x, list) and len(x) == 4 for x in bxs)):
            raise DmlmError(f"{manifest}: row {i + 1}: expected one [x0, y0, x1, y1] box per equation")
        equations.append([str(x) for x in eqs])
        boxes.append([[int(v) for v in x] for x in bxs])
    return equations, boxes, (int(images.shape[1]), int(images.shape[2]))


def grid(equations: list[str], boxes: list, width: int, char_width: int) -> np.ndarray:
    """The (rows, columns) character-id grid of one image (no row separators)."""
    lookup = {c: i for i, c in enumerate(VOCAB)}
    columns = math.ceil(width / char_width)
    order = sorted(range(len(equations)), key=lambda k: (boxes[k][1] + boxes[k][3]) / 2)
    out = np.full((len(equations), columns), BLANK_ID, dtype=np.int32)
    for row, k in enumerate(order):
        text = equations[k]
        if len(text) > columns:
            raise DmlmError(
                f"tokens.image.char_width: {char_width} px gives {columns} columns, too few for {text!r}"
            )
        start = min(int(round(boxes[k][0] / char_width)), columns - len(text))
        for j, ch in enumerate(text):
            if ch not in lookup:
                raise DmlmError(f"raster: character {ch!r} of {text!r} is not in the vocabulary {VOCAB!r}")
            out[row, start + j] = lookup[ch]
    return out


def flatten(cells: np.ndarray) -> np.ndarray:
    """Grid -> token ids, row by row, each row followed by the row separator."""
    rows = np.concatenate([cells, np.full((len(cells), 1), ROW_ID, np.int32)], axis=1)
    return rows.reshape(-1).astype(np.int32)


def decode(ids) -> list[str]:
    """Token ids -> one string per row (blanks stripped at both ends): the display strings in
    reading order."""
    text = "".join(VOCAB[int(i)] for i in ids)
    return [row.strip(BLANK) for row in text.split(ROW_SEPARATOR)[:-1]]


def check_settings(settings: dict) -> None:
    _char_width(settings)


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """The fixed character vocabulary; checks the split's strings against it (no learning)."""
    cw = _char_width(settings)
    equations, boxes, (_, width) = read_layout(media_path)
    for eqs, bxs in zip(equations, boxes):
        grid(eqs, bxs, width, cw)  # raises on unknown characters or too narrow a grid
    code_points = np.array([[ord(c)] for c in VOCAB], dtype=np.float32)
    return Codebook(code_points, {**settings, "char_width": cw, "modality": "image"})


def _check(codebook: Codebook) -> None:
    if codebook.dim != 1 or "".join(chr(int(c)) for c in codebook.centroids[:, 0]) != VOCAB:
        raise DmlmError("raster codebook: its characters differ from this code's vocabulary (fit it again)")


def encode(codebook: Codebook, media_path: str | os.PathLike) -> list[np.ndarray]:
    """int32 grid ids (row by row, row separators included) per image of ``media_path``."""
    _check(codebook)
    cw = _char_width(codebook.settings)
    equations, boxes, (_, width) = read_layout(media_path)
    return [flatten(grid(e, b, width, cw)) for e, b in progress(list(zip(equations, boxes)), "raster tokens")]


def describe(codebook: Codebook) -> dict:
    return {"vocab_size": codebook.n_units, "frame_rate": None}
