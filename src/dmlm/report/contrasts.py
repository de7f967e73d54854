"""contrasts.csv: paired differences between the values of each axis a study varies besides the
modality set (input order, backbone, loss weights, encoders), with bootstrap CIs.

An axis's reference, per modality set, is its first value in the study's grid. A cell (all axes
but the seed) with another value is compared with the cell that differs from it only in that axis
(and in what follows from it, e.g. ``image_encoder`` from ``encoders``), at the same test SNR,
seed by seed, over the seeds both have:

    wer: WER(value) - WER(reference)        (negative: the value makes fewer errors)
    rb:  RB(value) - RB(reference)          (positive: the value gains more from the extra
                                             modalities; each RB against its own audio-only twin,
                                             over the seeds where both sides have one)

Both cells' evaluations (and their audio-only twins) share one resample of utterances and seeds,
so the interval is paired: it answers "is the difference real", which two overlapping per-cell
intervals cannot. Left out: cells that are the same runs (e.g. audio only under both input orders),
pairs already compared (audio only under another axis's values), and a cell whose reference is
missing (it is never compared against another value instead).
Where a study varies several axes, the other axes' values are columns of the row (``given``).

Axis ``snr`` (metric ``rb`` only) is the noise trend of each multimodal cell: its RB at each test
SNR minus its RB at the noisiest one, on the same runs and utterances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError
from dmlm.grid import AUDIO_ONLY
from dmlm.report.metrics import corpus_wer_of, interval, relative_benefit, resampled_wer, seed_mean
from dmlm.report.tables import DERIVED, Bootstrap, cell_keys, label_axes, snr_order, stack_errors

COLUMNS = ["axis", "reference", "value", "modalities", "given", "snr", "metric", "reference_mean", "value_mean",
           "difference", "ci_low", "ci_high", "seeds"]


def contrast_table(wer: pd.DataFrame, rb: pd.DataFrame, utterances: dict, axes: list[str],
                   boot: Bootstrap) -> pd.DataFrame:
    rows, seen = [], set()
    twins = {k: v for k, v in rb.set_index(["run", "cond"])["audio_run"].items() if v} if len(rb) else {}
    for axis in label_axes(wer, axes)[1:]:
        # per modality set: the grid's order of the axis's values (wer rows follow the grid)
        order = {m: list(dict.fromkeys(g[axis])) for m, g in wer.groupby("modalities", sort=False)}
        match = [a for a in cell_keys(axes) if a != axis and a not in DERIVED and a in wer] + ["snr"]
        given = [a for a in match if a not in ("modalities", "snr") and wer[a].nunique() > 1]
        for key, group in wer.groupby(match, dropna=False, sort=False):
            row = dict(zip(match, key))
            values = order[row["modalities"]]
            by_value = {v: g.set_index("seed") for v, g in group.groupby(axis, sort=False)}
            if values[0] not in by_value:
                continue
            ref = by_value[values[0]]
            if ref.index.has_duplicates:
                raise DmlmError(f"contrasts of {axis}: several runs of one seed in a cell: {list(ref['run'])}")
            for value in values[1:]:
                other = by_value.get(value)
                if other is None:
                    continue
                seeds = sorted(set(ref.index) & set(other.index))
                pair = (axis, row["snr"], tuple(ref.loc[seeds, "run"]), tuple(other.loc[seeds, "run"]))
                if not seeds or pair[2] == pair[3] or pair in seen:  # the same runs, or already compared
                    continue
                seen.add(pair)
                base = {"axis": axis, "reference": values[0], "value": value, "modalities": row["modalities"],
                        "given": ", ".join(f"{a}={row[a]}" for a in given), "snr": row["snr"]}
                rows += _contrast(base, ref.loc[seeds], other.loc[seeds], twins, utterances, boot)
    rows += _noise_trend(wer, rb, twins, utterances, axes, boot)
    return pd.DataFrame(rows, columns=COLUMNS)


def _noise_trend(wer, rb, twins, utterances, axes, boot) -> list[dict]:
    """Axis ``snr``: each multimodal cell's RB at every test SNR minus its RB at the noisiest one,
    paired (the test utterances are the same at every SNR). Positive at a moderate SNR: the
    benefit falls off at the highest noise (the paper's image/OCR pattern); negative at the
    cleaner SNRs: the benefit grows with the noise (its lips pattern)."""
    if not len(rb):
        return []
    keys = [a for a in cell_keys(axes) if a not in DERIVED and a in rb]
    given = [a for a in keys if a != "modalities" and wer[a].nunique() > 1]
    rows = []
    for key, group in rb.groupby(keys, dropna=False, sort=False):
        row = dict(zip(keys, key))
        order = snr_order(group["snr"])
        ref = group[group["snr"] == order[-1]].set_index("seed")
        for snr in order[:-1]:
            other = group[group["snr"] == snr].set_index("seed")
            seeds = sorted(set(ref.index) & set(other.index))
            if not seeds:
                continue
            base = {"axis": "snr", "reference": order[-1], "value": snr, "modalities": row["modalities"],
                    "given": ", ".join(f"{a}={row[a]}" for a in given), "snr": snr}
            rows += _contrast(base, ref.loc[seeds], other.loc[seeds], twins, utterances, boot, wer_too=False)
    return rows


def labels(contrasts: pd.DataFrame, metric: bool = True) -> pd.Series:
    """One readable label per contrast row (without the SNR): "audio_last - audio_first, A+O
    (backbone=mamba), RB"; for the noise trend "RB at each SNR - RB at -20 dB, A+L"."""
    given = contrasts["given"].fillna("").astype(str).map(lambda g: f" ({g})" if g else "")
    what = contrasts["value"].astype(str) + " - " + contrasts["reference"].astype(str)
    trend = "RB at each SNR - RB at " + contrasts["reference"].astype(str) + " dB"
    what = what.where(contrasts["axis"] != "snr", trend)
    label = what + ", " + contrasts["modalities"] + given
    return label + ", " + contrasts["metric"].str.upper() if metric else label


def _keys(side: pd.DataFrame) -> list[tuple]:
    return list(zip(side["run"], side["cond"]))


def _difference(base: dict, metric: str, point_ref, point_val, samples, draws, boot) -> dict:
    low, high = interval(seed_mean(samples, draws), boot.confidence)
    return {**base, "metric": metric, "reference_mean": float(np.mean(point_ref)),
            "value_mean": float(np.mean(point_val)), "difference": float(np.mean(point_val - point_ref)),
            "ci_low": low, "ci_high": high, "seeds": len(point_ref)}


def _contrast(base: dict, ref: pd.DataFrame, other: pd.DataFrame, twins: dict, utterances: dict,
              boot: Bootstrap, wer_too: bool = True) -> list[dict]:
    out = []
    if wer_too:
        errors, ref_words = stack_errors(_keys(ref) + _keys(other), utterances)  # one test set, or a named error
        errors_ref, errors_val = errors[: len(ref)], errors[len(ref):]
        draws = boot.draws(len(ref_words), len(errors_ref))
        wer_ref, wer_val = resampled_wer(errors_ref, ref_words, draws), resampled_wer(errors_val, ref_words, draws)
        out.append(_difference(base, "wer", corpus_wer_of(errors_ref, ref_words),
                               corpus_wer_of(errors_val, ref_words), wer_val - wer_ref, draws, boot))
    if base["modalities"] == AUDIO_ONLY:
        return out
    # RB over the seeds where both sides have their audio-only twin
    both = [s for s, kr, kv in zip(ref.index, _keys(ref), _keys(other)) if kr in twins and kv in twins]
    if not both:
        return out
    ref, other = ref.loc[both], other.loc[both]
    keys_ref, keys_val = _keys(ref), _keys(other)
    keys = keys_ref + keys_val + [(twins[k], k[1]) for k in keys_ref + keys_val]
    errors, ref_words = stack_errors(keys, utterances)
    n = len(both)
    m_ref, m_val, a_ref, a_val = errors[:n], errors[n:2 * n], errors[2 * n:3 * n], errors[3 * n:]
    draws = boot.draws(len(ref_words), n)
    samples = (relative_benefit(resampled_wer(a_val, ref_words, draws), resampled_wer(m_val, ref_words, draws))
               - relative_benefit(resampled_wer(a_ref, ref_words, draws), resampled_wer(m_ref, ref_words, draws)))
    point_ref = relative_benefit(corpus_wer_of(a_ref, ref_words), corpus_wer_of(m_ref, ref_words))
    point_val = relative_benefit(corpus_wer_of(a_val, ref_words), corpus_wer_of(m_val, ref_words))
    out.append(_difference(base, "rb", point_ref, point_val, samples, draws, boot))
    return out
