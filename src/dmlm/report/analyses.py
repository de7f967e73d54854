"""The study's analyses, each as one sentence computed from the tables (and the peak-RB table).

Each function returns a sentence. Where the study lacks the axis an analysis needs (one backbone,
one loss-weight setting, no input-order axis, no lips or no image/OCR run), the sentence says so
instead of giving a number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dmlm.grid import AUDIO_ONLY
from dmlm.report.collect import STREAM_TOKENS
from dmlm.report.tables import cells, label_axes, row_labels, snr_order

SYNCHRONIZED = {"L"}  # lips move with the speech
UNSYNCHRONIZED = {"I", "O"}  # one image / its OCR text for the whole utterance
ORDER_AXES = ("order", "layout", "input_order")
FAMILY_KIND = {"opt": "Transformer", "mamba": "Mamba", "mamba2": "Mamba2"}


def pct(x) -> str:
    return "undefined" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def snr_text(snr) -> str:
    return "clean" if snr == "clean" else f"{snr} dB"


def ci_text(mean, low, high) -> str:
    if not np.isfinite(mean):
        return "undefined"
    if not (np.isfinite(low) and np.isfinite(high)):
        return pct(mean)
    return f"{100 * mean:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def extras(modset: str) -> set[str]:
    return set(modset.split("+")) - {AUDIO_ONLY}


def noisiest(snrs) -> object:
    return snr_order(snrs)[-1]


def cleanest(snrs) -> object:
    return snr_order(snrs)[0]


def labelled(table: pd.DataFrame, axes: list[str], extra: tuple = ()) -> pd.DataFrame:
    """The table's cells with a ``label`` column (modality set and the axes varying within it)."""
    frame = cells(table, axes, extra)
    frame["label"] = row_labels(frame, label_axes(frame, axes)) if len(frame) else []
    return frame


NO_TWIN = ("no multimodal run with an audio-only twin (RB needs the audio-only run with the same backbone, "
           "training noise, loss weights and seed)")


def peak_table(rb: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per modality set (and other varying axes): the test SNR of the highest mean RB, its CI,
    and the RB at the noisiest test SNR."""
    frame = labelled(rb, axes)
    rows = []
    for label, group in frame.groupby("label", sort=False):
        worst = group[group["snr"] == noisiest(group["snr"])].iloc[0]
        defined = group[np.isfinite(group["rb_mean"].astype(float))]
        if len(defined):
            best = defined.loc[defined["rb_mean"].astype(float).idxmax()]
            peak = (best["snr"], best["rb_mean"], best["rb_ci_low"], best["rb_ci_high"])
        else:
            peak = (None, np.nan, np.nan, np.nan)
        rows.append({"set": label, "modalities": group["modalities"].iloc[0], "peak_snr": peak[0],
                     "rb_peak": peak[1], "rb_peak_ci_low": peak[2], "rb_peak_ci_high": peak[3],
                     "noisiest_snr": worst["snr"], "rb_noisiest": worst["rb_mean"], "seeds": group["seeds"].max()})
    return pd.DataFrame(rows, columns=["set", "modalities", "peak_snr", "rb_peak", "rb_peak_ci_low",
                                       "rb_peak_ci_high", "noisiest_snr", "rb_noisiest", "seeds"])


def peak_snrs_text(snrs) -> str:
    """'-10 dB' for one setting; '-10 dB (5 of 8), 0 dB (3 of 8)' over several."""
    snrs = list(snrs)
    counts = pd.Series([snr_text(s) if s is not None else "undefined" for s in snrs]).value_counts(sort=True)
    if len(snrs) == 1:
        return counts.index[0]
    return ", ".join(f"{snr} ({n} of {len(snrs)})" for snr, n in counts.items())


def peak_sentence(peaks: pd.DataFrame) -> str:
    """Per modality set: the peak SNR (of each setting of the other axes, counted when several)
    and the highest RB with its CI."""
    if not len(peaks):
        return "The study has no multimodal run with an audio-only twin, so no RB peak is computed."
    parts = []
    for modalities, group in peaks.groupby("modalities", sort=False):
        defined = group[np.isfinite(group["rb_peak"].astype(float))]
        if not len(defined):
            parts.append(f"{modalities}: undefined at every SNR")
            continue
        best = defined.loc[defined["rb_peak"].astype(float).idxmax()]
        where = "" if len(group) == 1 else f" in {best.set}"
        settings = "" if len(group) == 1 else f" over {len(group)} settings"
        parts.append(f"{modalities} at {peak_snrs_text(group['peak_snr'])}{settings} (highest "
                     f"{ci_text(best.rb_peak, best.rb_peak_ci_low, best.rb_peak_ci_high)}{where})"
                     if len(group) > 1 else
                     f"{modalities} at {peak_snrs_text(group['peak_snr'])} "
                     f"({ci_text(best.rb_peak, best.rb_peak_ci_low, best.rb_peak_ci_high)})")
    above = int((peaks["rb_peak_ci_low"].astype(float) > 0).sum())
    return ("RB peaks (mean over seeds, 95% CI) for " + "; ".join(parts)
            + f"; {above} of {len(peaks)} peak intervals lie above 0 (a benefit distinguishable from none).")


def sync_sentence(peaks: pd.DataFrame, snrs: list) -> str:
    if not len(peaks):
        return "Synchronized and unsynchronized modalities are not compared: no RB without an audio-only twin."
    sync = peaks[[extras(m) <= SYNCHRONIZED and bool(extras(m)) for m in peaks["modalities"]]]
    unsync = peaks[[extras(m) <= UNSYNCHRONIZED and bool(extras(m)) for m in peaks["modalities"]]]
    if not len(sync) or not len(unsync):
        lacking = "lips (synchronized)" if not len(sync) else "image or OCR (unsynchronized)"
        return (f"Synchronized and unsynchronized modalities are not compared: this study has no "
                f"{lacking} run beside audio.")
    worst, order = noisiest(snrs), snr_order(snrs)

    def describe(group):
        mean_worst = group["rb_noisiest"].astype(float).mean()
        return (f"{', '.join(dict.fromkeys(group['modalities']))} (RB {pct(mean_worst)} at {snr_text(worst)}, "
                f"peak at {peak_snrs_text(group['peak_snr'])})")

    sentence = f"Synchronized {describe(sync)} against unsynchronized {describe(unsync)}: "
    if len(order) < 3:
        return sentence + (f"with {len(order)} test SNR(s) there is no moderate noise level between the cleanest "
                           f"and the noisiest, so the paper's pattern (lips at high noise, image/OCR at moderate "
                           f"noise) cannot be checked.")
    lips_high = all(s == worst for s in sync["peak_snr"])
    unsync_moderate = all(s is not None and s not in (order[0], worst) for s in unsync["peak_snr"])
    verdict = {(True, True): "both hold", (True, False): "only the first holds",
               (False, True): "only the second holds", (False, False): "neither holds"}[lips_high, unsync_moderate]
    return sentence + (f"of the paper's two findings (lips peak at the highest noise, in every setting; image/OCR "
                       f"at a moderate level), {verdict} here.")


def order_sentence(rb: pd.DataFrame, axes: list[str]) -> str:
    axis = next((a for a in ORDER_AXES if a in rb and rb[a].nunique() > 1), None)
    if axis is None:
        return ("This study has a single input order (no `order` or `layout` axis with several values), "
                "so input orders are not compared.")
    frame = cells(rb, axes)
    hi, lo = cleanest(frame["snr"]), noisiest(frame["snr"])
    parts = []
    for value, group in frame.groupby(axis, sort=False):
        at = group.groupby("snr", sort=False)["rb_mean"].mean()
        parts.append(f"{value}: {pct(at.get(hi, np.nan))} at {snr_text(hi)}, {pct(at.get(lo, np.nan))} "
                     f"at {snr_text(lo)}")
    means = frame[frame["snr"] == lo].groupby(axis)["rb_mean"].mean()
    best = means.idxmax() if means.notna().any() else None
    tail = f"; at {snr_text(lo)} `{best}` benefits most" if best is not None else ""
    return f"Mean RB over modality sets by input {axis}: " + "; ".join(parts) + tail + "."


def final_val_loss(curves: pd.DataFrame) -> pd.Series:
    """Last logged validation transcript loss of each run (comparable across loss weights: plain
    cross-entropy over the transcript, whatever the weights)."""
    if not len(curves) or "val_transcript_loss" not in curves:
        return pd.Series(dtype=float)
    logged = curves[pd.to_numeric(curves["val_transcript_loss"], errors="coerce").notna()]
    return logged.sort_values("step").groupby("run")["val_transcript_loss"].last().astype(float)


def loss_weights_sentence(wer: pd.DataFrame, curves: pd.DataFrame, axes: list[str]) -> str:
    if "loss_weights" not in wer or wer["loss_weights"].nunique() < 2:
        only = ", ".join(map(str, wer["loss_weights"].unique())) if "loss_weights" in wer else "none"
        return f"One loss-weight setting ({only}) only, so none is chosen on validation."
    val = final_val_loss(curves)
    frame = wer.assign(val_loss=wer["run"].map(val))
    group_axes = [a for a in label_axes(frame, axes) if a != "loss_weights"]
    parts = []
    for key, group in frame.groupby(group_axes, sort=False):
        per = group.groupby("loss_weights").agg(val_loss=("val_loss", "mean"), test_wer=("wer", "mean"))
        if per["val_loss"].isna().all():
            parts.append(f"{key}: no validation loss logged")
            continue
        chosen, oracle = per["val_loss"].idxmin(), per["test_wer"].idxmin()
        label = key if isinstance(key, str) else " / ".join(map(str, key))
        parts.append(f"{label}: `{chosen}` (validation transcript loss {per.loc[chosen, 'val_loss']:.3f}; test WER "
                     f"{pct(per.loc[chosen, 'test_wer'])} mean over SNRs and seeds"
                     + ("" if oracle == chosen else f"; `{oracle}` would have scored {pct(per.loc[oracle, 'test_wer'])}")
                     + ")")
    return "Loss weights chosen on validation, reported on test: " + "; ".join(parts) + "."


def backbone_sentence(wer: pd.DataFrame, rb: pd.DataFrame, speed: pd.DataFrame, families: dict) -> str:
    def kind(b):
        family = families.get(b, b)
        return f"{b} ({FAMILY_KIND.get(family, family)})"

    def rate(frame):
        if "utterances_per_s" not in frame or not frame["utterances_per_s"].notna().any():
            return "a speed not recorded"
        return (f"{frame['utterances_per_s'].astype(float).mean():.1f} utterances/s, "
                f"{frame['tokens_per_s'].astype(float).mean():.0f} generated tokens/s")

    backbones = list(wer["backbone"].unique())
    if len(backbones) < 2:
        b = backbones[0] if backbones else "?"
        return (f"Only one backbone, {kind(b)}, in this study, so Transformer and Mamba are not compared; "
                f"it decodes at {rate(speed)}.")
    parts = []
    for b in backbones:
        rbs = rb[rb["backbone"] == b]["rb"].astype(float)
        parts.append(f"{kind(b)}: WER {pct(wer[wer['backbone'] == b]['wer'].mean())}, RB "
                     f"{pct(rbs.mean() if rbs.notna().any() else np.nan)}, {rate(speed[speed['backbone'] == b])}")
    kinds = {FAMILY_KIND.get(families.get(b, b)) for b in backbones}
    note = "" if {"Transformer"} & kinds and kinds & {"Mamba", "Mamba2"} else \
        " (no Transformer-against-Mamba pair among them)"
    return "By backbone, means over modality sets, SNRs and seeds" + note + ": " + "; ".join(parts) + "."


def sequence_shares(wer: pd.DataFrame) -> pd.DataFrame:
    """Per multimodal evaluation: the share of the sequence's tokens (modality blocks and
    transcript) that come from the extra modalities, from wer.json's tokens per utterance."""
    streams = [c for c in wer.columns if c.startswith(STREAM_TOKENS)]
    if not streams:
        return pd.DataFrame()
    multi = wer[wer["modalities"] != AUDIO_ONLY].copy()
    total = multi[streams].astype(float).fillna(0).sum(axis=1)
    extra_cols = [c for c in streams if c not in (f"{STREAM_TOKENS}audio", f"{STREAM_TOKENS}transcript")]
    multi["extra_share"] = multi[extra_cols].astype(float).fillna(0).sum(axis=1) / total
    return multi


def sequence_noise_sentence(wer: pd.DataFrame, rb: pd.DataFrame, axes: list[str]) -> str:
    shares = sequence_shares(wer)
    if not len(shares) or "extra_share" not in shares:
        if (wer["modalities"] != AUDIO_ONLY).any():
            return ("Sequence noise is not computed: these evaluations did not record tokens per utterance "
                    "(wer.json without tokens_per_utterance; evaluate again to add it).")
        return "Sequence noise is not computed: the study has no multimodal run."
    shares["label"] = row_labels(shares, label_axes(shares, axes))
    rb = rb.assign(label=row_labels(rb, label_axes(rb, axes))) if len(rb) else rb.assign(label=[])
    table = pd.DataFrame({"share": shares.groupby("label", sort=False)["extra_share"].mean(),
                          "rb": rb.groupby("label", sort=False)["rb"].mean() if len(rb) else np.nan})
    table = table.sort_values("share", ascending=False)
    parts = [f"{label} {100 * r.share:.0f}% (mean RB {pct(r.rb)})" for label, r in table.iterrows()]
    sentence = ("Share of the sequence's tokens from the extra modalities, beside their mean RB over SNRs and "
                "seeds: " + "; ".join(parts))
    defined = table.dropna()
    if len(defined) >= 3 and defined["share"].nunique() > 1 and defined["rb"].nunique() > 1:
        rho = defined["share"].rank().corr(defined["rb"].rank())
        sentence += (f"; Spearman correlation of share and RB over {len(defined)} sets: {rho:+.2f}"
                     + (" (more sequence noise, less benefit)" if rho < 0 else ""))
    else:
        sentence += f"; too few sets with a defined RB ({len(defined)}) for a correlation"
    return sentence + "."


def perceptual_sentence(perceptual: pd.DataFrame, axes: list[str]) -> str:
    if not len(perceptual):
        return "No perceptual scores: the study has no multimodal run (or its permuted evaluations are missing)."
    frame = perceptual.assign(label=row_labels(perceptual, label_axes(perceptual, axes)))
    parts = []
    for (label, modality), group in frame.groupby(["label", "permuted"], sort=False):
        raw, norm = group["score"].astype(float).mean(), group["score_norm"].astype(float).mean()
        parts.append(f"{modality} in {label} {'+' if raw >= 0 else ''}{100 * raw:.1f} WER points "
                     f"(normalised {norm:+.2f})" if math.isfinite(norm) else f"{modality} in {label} "
                     f"{100 * raw:+.1f} WER points")
    return ("Perceptual score (WER with the modality permuted across test items minus WER, mean over SNRs and "
            "seeds): " + "; ".join(parts) + ".")
