"""contrasts.csv: paired differences between the values of each axis a study varies besides the
modality set (input order, backbone, loss weights, encoders), with bootstrap CIs.

The first value of an axis in the study's grid (among a modality set's values) is the reference. A cell (all axes but the seed)
with another value is compared with the cell that differs from it only in that axis (and in what
follows from it, e.g. ``image_encoder`` from ``encoders``), at the same test SNR, seed by seed:

    wer: WER(value) - WER(reference)        (negative: the value makes fewer errors)
    rb:  RB(value) - RB(reference)          (positive: the value gains more from the extra
                                             modalities; each RB against its own audio-only twin)

Both cells' evaluations (and their audio-only twins) share one resample of utterances and seeds,
so the interval is paired: it answers "is the difference real", which two overlapping per-cell
intervals cannot. Cells that are the same runs (e.g. audio only under both input orders) and
seeds that only one side has are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError
from dmlm.grid import AUDIO_ONLY
from dmlm.report.metrics import interval, relative_benefit, resampled_wer, seed_mean
from dmlm.report.tables import DERIVED, Bootstrap, cell_keys, label_axes

COLUMNS = ["axis", "reference", "value", "modalities", "snr", "metric", "reference_mean", "value_mean",
           "difference", "ci_low", "ci_high", "seeds"]


def _errors(keys: list[tuple], utterances: dict):
    """(errors [seeds, utterances], ref_words, ids) of evaluations (run, cond), one test set."""
    utts = [utterances[k] for k in keys]
    for u in utts[1:]:
        if len(u.ids) != len(utts[0].ids) or (u.ids != utts[0].ids).any():
            raise DmlmError(f"contrasted evaluations were made on different test sets: {keys}")
    return np.stack([u.errors for u in utts]), utts[0].ref_words


def _corpus_wer(errors, ref_words):
    return errors.sum(axis=1) / float(np.sum(ref_words))


def contrast_table(wer: pd.DataFrame, rb: pd.DataFrame, utterances: dict, axes: list[str],
                   boot: Bootstrap) -> pd.DataFrame:
    rows = []
    twins = rb.set_index(["run", "cond"])["audio_run"].to_dict() if len(rb) else {}
    for axis in label_axes(wer, axes)[1:]:
        values = list(dict.fromkeys(wer[axis]))
        match = [a for a in cell_keys(axes) if a != axis and a not in DERIVED and a in wer] + ["snr"]
        for key, group in wer.groupby(match, dropna=False, sort=False):
            by_value = {v: g.set_index("seed") for v, g in group.groupby(axis, sort=False)}
            present = [v for v in values if v in by_value]  # e.g. encoders: each set has its own
            ref = by_value[present[0]]
            for value in present[1:]:
                other = by_value[value]
                seeds = sorted(set(ref.index) & set(other.index))
                if not seeds or list(ref.loc[seeds, "run"]) == list(other.loc[seeds, "run"]):
                    continue
                row = dict(zip(match, key))
                rows += _contrast(axis, present[0], value, row, ref.loc[seeds], other.loc[seeds], twins,
                                  utterances, boot)
    return pd.DataFrame(rows, columns=COLUMNS)


def _contrast(axis, reference, value, row, ref, other, twins, utterances, boot) -> list[dict]:
    conds = list(ref["cond"])
    errors_ref, ref_words = _errors(list(zip(ref["run"], conds)), utterances)
    errors_val, _ = _errors(list(zip(other["run"], other["cond"])), utterances)
    draws = boot.draws(len(ref_words), len(errors_ref))
    base = {"axis": axis, "reference": reference, "value": value, "modalities": row["modalities"],
            "snr": row["snr"], "seeds": len(errors_ref)}
    wer_ref, wer_val = resampled_wer(errors_ref, ref_words, draws), resampled_wer(errors_val, ref_words, draws)
    point_ref, point_val = _corpus_wer(errors_ref, ref_words), _corpus_wer(errors_val, ref_words)
    out = [{**base, "metric": "wer", "reference_mean": point_ref.mean(), "value_mean": point_val.mean(),
            "difference": (point_val - point_ref).mean(),
            **dict(zip(("ci_low", "ci_high"), interval(seed_mean(wer_val - wer_ref, draws), boot.confidence)))}]
    twin_keys = [[(twins.get((r, c)) or None, c) for r, c in zip(side["run"], side["cond"])] for side in (ref, other)]
    if row["modalities"] == AUDIO_ONLY or any(k[0] is None for keys in twin_keys for k in keys):
        return out  # RB needs both sides' audio-only twins (rb.csv leaves a missing twin's run empty)
    audio_ref, _ = _errors(twin_keys[0], utterances)
    audio_val, _ = _errors(twin_keys[1], utterances)
    rb_ref = relative_benefit(_corpus_wer(audio_ref, ref_words), point_ref)
    rb_val = relative_benefit(_corpus_wer(audio_val, ref_words), point_val)
    samples = (relative_benefit(resampled_wer(audio_val, ref_words, draws), wer_val)
               - relative_benefit(resampled_wer(audio_ref, ref_words, draws), wer_ref))
    out.append({**base, "metric": "rb", "reference_mean": np.mean(rb_ref), "value_mean": np.mean(rb_val),
                "difference": np.mean(rb_val - rb_ref),
                **dict(zip(("ci_low", "ci_high"), interval(seed_mean(samples, draws), boot.confidence)))})
    return out
