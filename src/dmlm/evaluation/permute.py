"""Inputs of one modality permuted across test items, for the perceptual score (Gat et al. 2021).

A *derangement* is a permutation that moves every item: after it, no utterance is paired with its
own lip video, image or OCR text, so whatever the model still gets right it gets without that
modality's information about the utterance. It is drawn uniformly among derangements (a uniform
permutation, redrawn while it has a fixed point; about e = 2.7 draws on average) from
``numpy.random.default_rng(seed)``: the same seed and size give the same derangement.
"""

from __future__ import annotations

import numpy as np

from dmlm.errors import DmlmError


def derangement(n: int, seed: int) -> np.ndarray:
    """``perm`` with ``perm[i] != i`` for every i: item i receives the input of item ``perm[i]``."""
    if n < 2:
        raise DmlmError(f"a modality cannot be permuted across {n} test item(s): need at least 2")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def permuted(items, perm: np.ndarray) -> list:
    """``items`` (a ragged array or list) reordered: entry i is ``items[perm[i]]``."""
    if len(perm) != len(items):
        raise DmlmError(f"permutation of {len(perm)} items for a stream of {len(items)}")
    return [items[int(j)] for j in perm]
