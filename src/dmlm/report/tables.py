"""A study's tidy tables: WER, relative benefit (RB) and perceptual score with bootstrap CIs, speed.

Each table has one row per evaluation (a run, i.e. one seed, at one test SNR) with its own value,
plus the columns ``*_mean``, ``*_ci_low``, ``*_ci_high`` and ``seeds`` of its *cell*: the rows that
differ only in the seed. Those are the same on every seed's row (formulas in
``dmlm.report.metrics``).

Axes are the columns of ``grid.evals_table`` (whatever it holds: ``backbone``, ``loss_weights``,
and ``order``/``layout`` when the grid has them); nothing here lists them all by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError
from dmlm.grid import AUDIO_ONLY
from dmlm.report.metrics import (
    draw_resamples,
    perceptual_score,
    perceptual_with_ci,
    rb_with_ci,
    relative_benefit,
    wer_with_ci,
)

# columns of an evaluation that are not axes a row is told apart by
NOT_AXES = {"run", "cond", "study"}
# the audio-only twin of an A+M run shares these axes (and any other axis the audio-only runs vary)
PAIRING = ["audio_encoder", "train_noise", "backbone", "loss_weights", "seed", "snr"]
# axes fixed by the modality set or by another axis: never on their own in a row label
DERIVED = {"audio_encoder", "lips_encoder", "image_encoder", "placement", "snr", "seed"}


def axes_of(evals: list[dict]) -> list[str]:
    return [c for c in (evals[0] if evals else {}) if c not in NOT_AXES]


def cell_keys(axes: list[str]) -> list[str]:
    """The axes of a cell: every axis but the seed."""
    return [a for a in axes if a != "seed"]


def pairing_keys(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    """PAIRING, plus each other axis (e.g. ``order``) on which the audio-only runs themselves differ;
    an axis the audio-only runs share (one value) is compared against that one run."""
    audio = frame[frame["modalities"] == AUDIO_ONLY]
    extra = [a for a in axes if a not in PAIRING and a not in {"modalities", "encoders"} | DERIVED
             and a in audio and audio[a].nunique() > 1]
    return [k for k in PAIRING if k in axes] + extra


def label_axes(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    """modalities, plus each axis that takes several values for one modality set (the encoders
    differ between sets by construction: they name only the set's own modalities)."""
    candidates = [a for a in axes if a not in DERIVED and a != "modalities" and a in frame]
    varying = [a for a in candidates if len(frame) and frame.groupby("modalities")[a].nunique().max() > 1]
    return ["modalities", *varying]


def row_labels(frame: pd.DataFrame, axes: list[str]) -> pd.Series:
    """One readable label per row: ``A+I / craft`` (the label axes' values joined)."""
    return frame[axes].astype(str).agg(" / ".join, axis=1)


def snr_order(values) -> list:
    """clean first, then from the highest SNR to the lowest (left to right = more noise)."""
    numbers = sorted({v for v in values if v != "clean"}, reverse=True)
    return (["clean"] if "clean" in set(values) else []) + numbers


def stack_errors(keys: list[tuple], utterances: dict):
    """(errors [len(keys), utterances], ref_words) of the evaluations ``keys`` (``(run, cond)``, ...),
    checked to share one test set: a paired statistic over them is only meaningful then."""
    utts = [utterances[k] for k in keys]
    first = utts[0]
    for u in utts[1:]:
        if len(u.ids) != len(first.ids) or (u.ids != first.ids).any():
            raise DmlmError(f"evaluations compared with each other were made on different test sets: "
                            f"{sorted({k[0] for k in keys})}")
    return np.stack([u.errors for u in utts]), first.ref_words


def _stack(cell: pd.DataFrame, utterances: dict, key=lambda r: (r.run, r.cond)):
    """``stack_errors`` of a cell's rows (one per seed)."""
    return stack_errors([key(r) for r in cell.itertuples(index=False)], utterances)


class Bootstrap:
    """Resampling counts per (utterances, seeds) shape, drawn once from the configured seed (so the
    cells of one shape share their draws: RB pairs and permuted evaluations resample alike)."""

    def __init__(self, options: dict):
        self.resamples = int(options["bootstrap_resamples"])
        self.confidence = float(options["confidence"])
        self.seed = int(options["bootstrap_seed"])
        self._draws = {}

    def draws(self, n_utterances: int, n_seeds: int):
        key = (n_utterances, n_seeds)
        if key not in self._draws:
            self._draws[key] = draw_resamples(n_utterances, n_seeds, self.resamples, self.seed)
        return self._draws[key]


def wer_table(wer: pd.DataFrame, utterances: dict, axes: list[str], boot: Bootstrap) -> pd.DataFrame:
    """wer.csv: each evaluation's WER and counts, with its cell's mean over seeds and CI."""
    out = wer.copy()
    for col in ("wer_mean", "wer_ci_low", "wer_ci_high", "seeds"):
        out[col] = np.nan
    for _, cell in out.groupby(cell_keys(axes), dropna=False, sort=False):
        errors, ref_words = _stack(cell, utterances)
        draws = boot.draws(len(ref_words), len(errors))
        out.loc[cell.index, ["wer_mean", "wer_ci_low", "wer_ci_high"]] = wer_with_ci(
            errors, ref_words, draws, boot.confidence)
        out.loc[cell.index, "seeds"] = len(cell)
    return out


def rb_table(wer: pd.DataFrame, utterances: dict, axes: list[str], boot: Bootstrap) -> pd.DataFrame:
    """rb.csv: each multimodal evaluation against its audio-only twin (same pairing axes):
    WER, the twin's WER, their difference and RB; its cell's mean RB over seeds with a paired CI
    (cells where a seed lacks its twin get NaN)."""
    keys = pairing_keys(wer, axes)
    audio = wer[wer["modalities"] == AUDIO_ONLY].set_index(keys)
    multi = wer[wer["modalities"] != AUDIO_ONLY]
    columns = ["run", *[a for a in axes if a in wer], "cond", "wer", "audio_run", "wer_audio", "delta_wer", "rb",
               "rb_mean", "rb_ci_low", "rb_ci_high", "delta_wer_mean", "seeds"]
    rows = []
    for row in multi.to_dict(orient="records"):
        key = tuple(row[k] for k in keys)
        twin = audio.loc[[key]].iloc[0] if key in audio.index else None
        wer_a = float(twin["wer"]) if twin is not None else np.nan
        rows.append({**row, "audio_run": twin["run"] if twin is not None else "", "audio_cond": row["cond"],
                     "wer_audio": wer_a, "delta_wer": wer_a - row["wer"],
                     "rb": relative_benefit(wer_a, row["wer"]) if twin is not None else np.nan})
    out = pd.DataFrame(rows, columns=[*columns, "audio_cond"])
    for _, cell in out.groupby(cell_keys([a for a in axes if a in out]), dropna=False, sort=False):
        out.loc[cell.index, "seeds"] = len(cell)
        out.loc[cell.index, "delta_wer_mean"] = cell["delta_wer"].mean()
        if (cell["audio_run"] == "").any():
            continue
        errors_m, ref_words = _stack(cell, utterances)
        errors_a, _ = _stack(cell, utterances, key=lambda r: (r.audio_run, r.audio_cond))
        draws = boot.draws(len(ref_words), len(errors_m))
        out.loc[cell.index, ["rb_mean", "rb_ci_low", "rb_ci_high"]] = rb_with_ci(
            errors_a, errors_m, ref_words, draws, boot.confidence)
    return out[columns]


def perceptual_table(wer: pd.DataFrame, permuted: pd.DataFrame, utterances: dict, permuted_utterances: dict,
                     axes: list[str], boot: Bootstrap) -> pd.DataFrame:
    """perceptual.csv: for each multimodal evaluation and extra modality m, the WER with m permuted
    across test items, the raw and normalised perceptual score, and the cell's mean and CI."""
    base = wer.set_index(["run", "cond"])["wer"]
    columns = ["run", *[a for a in axes if a in permuted], "cond", "permuted", "wer", "wer_permuted", "score",
               "score_norm", "score_mean", "score_norm_mean", "score_ci_low", "score_ci_high", "seeds"]
    rows = []
    for row in permuted.to_dict(orient="records"):
        if (row["run"], row["cond"]) not in base.index:
            continue  # the unpermuted evaluation is missing (listed as such)
        wer0 = float(base[(row["run"], row["cond"])])
        raw, norm = perceptual_score(wer0, row["wer"])
        rows.append({**row, "wer": wer0, "wer_permuted": row["wer"], "score": raw, "score_norm": norm})
    out = pd.DataFrame(rows, columns=columns)
    for _, cell in out.groupby([*cell_keys([a for a in axes if a in out]), "permuted"], dropna=False, sort=False):
        errors, ref_words = _stack(cell, utterances)
        errors_p, _ = _stack(cell, permuted_utterances, key=lambda r: (r.run, r.cond, r.permuted))
        draws = boot.draws(len(ref_words), len(errors))
        raw, norm, low, high = perceptual_with_ci(errors, errors_p, ref_words, draws, boot.confidence)
        out.loc[cell.index, ["score_mean", "score_norm_mean", "score_ci_low", "score_ci_high", "seeds"]] = (
            raw, norm, low, high, len(cell))
    return out[columns]


SPEED_COLUMNS = ["utterances", "decode_seconds", "utterances_per_s", "generated_tokens", "tokens_per_s",
                 "input_tokens", "input_tokens_per_s", "device", "threads"]


def speed_table(wer: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """speed.csv: decoding speed of each evaluation (from wer.json)."""
    return wer[["run", *[a for a in axes if a in wer], "cond", *[c for c in SPEED_COLUMNS if c in wer]]]


def cells(table: pd.DataFrame, axes: list[str], extra: tuple = ()) -> pd.DataFrame:
    """One row per cell (the first seed's row carries the cell's columns)."""
    return table.drop_duplicates([*cell_keys([a for a in axes if a in table]), *extra]).reset_index(drop=True)


def pivot(frame: pd.DataFrame, value: str, axes: list[str]) -> pd.DataFrame:
    """Mean over seeds; rows = runs (modality set and any other axis the study varies),
    columns = test SNR in noise order."""
    label = label_axes(frame, axes)
    table = frame.pivot_table(index=label, columns="snr", values=value, aggfunc="mean")
    if len(label) > 1:  # one readable label per row: "A+I / craft"
        table.index = [" / ".join(map(str, key)) for key in table.index]
        table.index.name = " / ".join(label)
    return table[[c for c in snr_order(frame["snr"]) if c in table.columns]]
