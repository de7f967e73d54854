"""summary.md of a study: what is missing, the tables (with CIs) and one sentence per analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmlm.report import analyses
from dmlm.report.contrasts import labels
from dmlm.report.tables import cells, label_axes, pivot, snr_order

RB_FORMULA = ("RB = (WER_A - WER_{A+M}) / WER_A against the audio-only run with the same backbone, training "
              "noise, loss weights and seed at the same test SNR; positive = the extra modalities help; undefined "
              "where WER_A is 0 or the audio-only run is missing.")
PERCEPTUAL_FORMULA = ("Perceptual score (Gat et al., NeurIPS 2021, with WER in place of accuracy): P_m = "
                      "WER(m permuted across test items by a seeded derangement) - WER; normalised: P_m / WER.")


def ci_pivot(frame: pd.DataFrame, value: str, axes: list[str], extra: tuple = ()) -> pd.DataFrame:
    """Rows as ``pivot``, cells "mean [low, high]" in percent, from the cell columns
    ``{value}_mean``, ``{value}_ci_low``, ``{value}_ci_high``."""
    frame = cells(frame, axes, extra)
    if extra:  # e.g. the permuted modality becomes part of the row label
        frame = frame.assign(modalities=frame["modalities"] + " (" + frame[list(extra)].astype(str).agg(
            ",".join, axis=1) + " permuted)")
    tables = {k: pivot(frame, f"{value}_{k}", axes) for k in ("mean", "ci_low", "ci_high")}
    out = tables["mean"].copy().astype(object)
    for i in out.index:
        for c in out.columns:
            out.loc[i, c] = analyses.ci_text(*(float(tables[k].loc[i, c]) if c in tables[k].columns and
                                               i in tables[k].index else np.nan for k in tables)).replace("%", "")
    return out


def speed_markdown(speed: pd.DataFrame) -> str:
    if not len(speed) or "tokens_per_s" not in speed:
        return "(no decoding speed recorded)"
    table = speed.groupby("run", sort=False).agg(
        backbone=("backbone", "first"), utterances_per_s=("utterances_per_s", "mean"),
        tokens_per_s=("tokens_per_s", "mean"), input_tokens_per_s=("input_tokens_per_s", "mean"),
        device=("device", "first"), threads=("threads", "first"))
    return table.round(1).to_markdown()


def contrasts_markdown(contrasts: pd.DataFrame) -> str:
    """Rows "axis: value - reference, modalities, metric", columns test SNR, cells "difference
    [low, high]" in points."""
    if not len(contrasts):
        return ("(this study varies no axis besides the modality set, or the cells to compare are the "
                "same runs)")
    frame = contrasts.assign(row=contrasts["axis"] + ": " + labels(contrasts))
    frame["text"] = [analyses.ci_text(*v).replace("%", "") for v in
                     frame[["difference", "ci_low", "ci_high"]].to_numpy(float)]
    table = frame.pivot_table(index="row", columns="snr", values="text", aggfunc="first", sort=False)
    # empty: no contrast there (a noise-trend row at its own reference SNR)
    return table[[c for c in snr_order(frame["snr"]) if c in table.columns]].fillna("").to_markdown()


def markdown(study: str, tables: dict, axes: list[str], families: dict, curves: pd.DataFrame, missing: list,
             confidence: float) -> str:
    wer, rb, perceptual, speed = tables["wer"], tables["rb"], tables["perceptual"], tables["speed"]
    level = f"{100 * confidence:g}%"
    lines = [f"# Study `{study}`", ""]
    if missing:
        lines += [f"## Missing ({len(missing)} file(s)): this report is made from the rest", ""]
        lines += [f"- `{m.path}`: {m.reason}" for m in missing] + [""]
    if not len(wer):
        return "\n".join(lines + ["No evaluation of this study was found.", ""])
    seeds = int(wer.groupby(label_axes(wer, axes) + ["snr"])["run"].count().max())
    lines += [
        f"WER (%) on the test split by test SNR (dB): mean over seeds (up to {seeds}) with the {level} "
        f"bootstrap interval over utterances and seeds in brackets; {int(wer['utterances'].iloc[0])} "
        f"utterances per evaluation.", "",
        ci_pivot(wer, "wer", axes).to_markdown(), "",
        "## Relative benefit", "", RB_FORMULA, "",
    ]
    # rows without an audio-only twin (a study comparing settings of multimodal runs by WER) have no RB
    twinned = rb[rb["audio_run"].fillna("").astype(str) != ""] if len(rb) else rb
    if len(twinned):
        lines += [ci_pivot(twinned, "rb", axes).to_markdown(), ""]
    else:
        lines += [f"({analyses.NO_TWIN}; the study's settings are compared by WER in the paired contrasts below)"
                  if len(rb) else "(no multimodal runs)", ""]
    peaks = analyses.peak_table(twinned, axes)
    lines += ["## Test SNR of the highest RB", ""]
    if len(peaks):
        shown = pd.DataFrame({
            "modality set": peaks["set"],
            "peak SNR": [analyses.snr_text(s) if s is not None else "-" for s in peaks["peak_snr"]],
            f"RB at peak (%, {level} CI)": [analyses.ci_text(*v).replace("%", "") for v in
                                            peaks[["rb_peak", "rb_peak_ci_low", "rb_peak_ci_high"]].to_numpy(float)],
            "noisiest SNR": [analyses.snr_text(s) for s in peaks["noisiest_snr"]],
            "RB there (%)": [analyses.pct(v).replace("%", "") for v in peaks["rb_noisiest"].astype(float)],
            "seeds": peaks["seeds"].astype(int),
        })
        lines += [shown.to_markdown(index=False), ""]
    else:
        lines += [f"({analyses.NO_TWIN})", ""]
    lines += ["## Perceptual score", "", PERCEPTUAL_FORMULA + " Raw score in WER points:", "",
              ci_pivot(perceptual, "score", axes, extra=("permuted",)).to_markdown() if len(perceptual)
              else "(no permuted evaluations)", "",
              "## Paired contrasts", "",
              "Each value of an axis against the axis's first value (same modality set and test SNR), in "
              "points: WER(value) - WER(reference) (negative: fewer errors) and RB(value) - RB(reference) "
              f"(positive: more benefit from the extra modalities), with {level} paired bootstrap intervals. "
              "Rows `snr` are the noise trend: a set's RB at each test SNR minus its RB at the noisiest "
              "(above 0 at a moderate SNR: the benefit falls off at the highest noise; below 0 at the "
              "cleaner SNRs: it grows with the noise; empty at the noisiest itself):",
              "", contrasts_markdown(tables.get("contrasts", pd.DataFrame())), "",
              "## Decoding speed", "", "Greedy decoding of the test split, mean over test SNRs:", "",
              speed_markdown(speed), ""]
    snrs = list(wer["snr"].unique())
    lines += ["## Analyses", ""]
    for title, sentence in [
        ("Peak of the benefit", analyses.peak_sentence(peaks)),
        ("Synchronized vs unsynchronized", analyses.sync_sentence(peaks, snrs)),
        ("Input order", analyses.order_sentence(rb, axes)),
        ("Loss weights", analyses.loss_weights_sentence(wer, curves, axes)),
        ("Transformer vs Mamba", analyses.backbone_sentence(wer, rb, speed, families)),
        ("Sequence noise", analyses.sequence_noise_sentence(wer, rb, axes)),
        ("Perceptual score", analyses.perceptual_sentence(perceptual, axes)),
    ]:
        lines.append(f"- **{title}.** {sentence}")
    return "\n".join(lines) + "\n"


