"""Figures of a study (PNG): RB against test SNR with CI bands, a WER heat map, perceptual scores,
training curves and the paired contrasts. A figure with nothing to show says so in its panel, so every declared file
exists."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dmlm.report.tables import cells, label_axes, pivot, row_labels  # noqa: E402
from dmlm.storage import atomic_path  # noqa: E402


def _save(fig, out_png) -> None:
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def _colors(labels) -> dict:
    """One colour per row label, the same in every panel of a figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def _lines_with_band(ax, frame: pd.DataFrame, value: str, axes: list[str], columns: list, colors=None) -> None:
    """One line per row label over the SNR columns, with the CI as a shaded band."""
    tables = {k: pivot(frame, f"{value}_{k}", axes).reindex(columns=columns) * 100
              for k in ("mean", "ci_low", "ci_high")}
    x = np.arange(len(columns))
    colors = colors or _colors(tables["mean"].index)
    for label in tables["mean"].index:
        mean = tables["mean"].loc[label].to_numpy(float)
        (line,) = ax.plot(x, mean, marker="o", label=str(label), color=colors.get(label))
        ax.fill_between(x, tables["ci_low"].loc[label].to_numpy(float), tables["ci_high"].loc[label].to_numpy(float),
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xticks=list(x), xticklabels=[str(c) for c in columns], xlabel="test SNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(title=" / ".join(label_axes(frame, axes)), fontsize=8)


def plot_wer_rb(study: str, wer: pd.DataFrame, rb: pd.DataFrame, axes: list[str], out_png, confidence: float) -> None:
    """WER and RB (mean over seeds) against test SNR, one line per modality set, CI bands."""
    from dmlm.report.tables import snr_order

    fig, (ax_wer, ax_rb) = plt.subplots(1, 2, figsize=(11, 4.4))
    columns = snr_order(wer["snr"]) if len(wer) else []
    colors = _colors(pivot(wer, "wer", axes).index) if len(wer) else {}
    if len(wer):
        _lines_with_band(ax_wer, cells(wer, axes), "wer", axes, columns, colors)
        ax_wer.set(title="WER", ylabel="WER (%)")
    else:
        _empty(ax_wer, "no evaluations found")
    if len(rb) and rb["rb_mean"].notna().any():
        _lines_with_band(ax_rb, cells(rb, axes), "rb", axes, columns, colors)
        ax_rb.axhline(0, color="grey", lw=0.8)
        ax_rb.set(title="Relative benefit over audio only", ylabel="RB (%)")
    else:
        _empty(ax_rb, "no RB: no multimodal run with an audio-only twin")
    seeds = wer["seed"].nunique() if len(wer) else 0
    fig.suptitle(f"study {study}: mean over {seeds} seed(s), {100 * confidence:g}% bootstrap bands")
    _save(fig, out_png)


def plot_wer_heatmap(study: str, wer: pd.DataFrame, axes: list[str], out_png) -> None:
    """Mean WER (%) per modality set (rows) and test SNR (columns), values written in the cells."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * max(1, wer["snr"].nunique() if len(wer) else 1),
                                    1.4 + 0.5 * max(1, wer["modalities"].nunique() if len(wer) else 1)))
    if not len(wer):
        _empty(ax, "no evaluations found")
        _save(fig, out_png)
        return
    table = pivot(wer, "wer", axes) * 100
    image = ax.imshow(table.to_numpy(float), cmap="viridis_r", aspect="auto")
    ax.set(xticks=range(table.shape[1]), xticklabels=[str(c) for c in table.columns], xlabel="test SNR (dB)",
           yticks=range(table.shape[0]), yticklabels=[str(i) for i in table.index], title=f"WER (%), study {study}")
    for (i, j), v in np.ndenumerate(table.to_numpy(float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v > np.nanmean(table) else "black")
    fig.colorbar(image, ax=ax, label="WER (%)")
    _save(fig, out_png)


def plot_perceptual(study: str, perceptual: pd.DataFrame, axes: list[str], out_png, confidence: float) -> None:
    """Raw perceptual score (WER points) per modality set and permuted modality against test SNR,
    with CI bands; the normalised score is in perceptual.csv."""
    from dmlm.report.tables import snr_order

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if not len(perceptual):
        _empty(ax, "no perceptual scores: no multimodal run\n(or its permuted evaluations are missing)")
    else:
        frame = cells(perceptual, axes, ("permuted",))
        frame = frame.assign(modalities=frame["modalities"] + ", " + frame["permuted"] + " permuted")
        _lines_with_band(ax, frame, "score", axes, snr_order(frame["snr"]))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(ylabel="WER(permuted) - WER (points)",
               title=f"Perceptual score, study {study} ({100 * confidence:g}% bands)")
    _save(fig, out_png)


def plot_training(study: str, curves: pd.DataFrame, wer: pd.DataFrame, axes: list[str], out_png) -> None:
    """Validation transcript loss and training loss against steps, one line per run."""
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4.2))
    if not len(curves) or "step" not in curves or "val_transcript_loss" not in curves:
        _empty(ax_train, "no training logs found")
        _empty(ax_val, "no training logs found")
    else:
        runs = wer.drop_duplicates("run") if len(wer) else pd.DataFrame({"run": curves["run"].unique()})
        seeds = ["seed"] if "seed" in runs and runs["seed"].nunique() > 1 else []
        labels = dict(zip(runs["run"], row_labels(runs, label_axes(runs, axes) + seeds))) if len(wer) else {}
        # in label order, so a modality set has the colour it has in the other figures
        for run in sorted(curves["run"].unique(), key=lambda r: str(labels.get(r, r))):
            curve = curves[curves["run"] == run]
            steps = pd.to_numeric(curve["step"], errors="coerce")
            for ax, col in ((ax_train, "train_loss"), (ax_val, "val_transcript_loss")):
                values = pd.to_numeric(curve[col], errors="coerce")
                ok = values.notna()
                ax.plot(steps[ok], values[ok], marker=".", label=labels.get(run, run))
        ax_train.set(title="training loss (modality-weighted)", xlabel="step", ylabel="loss (nats)")
        ax_val.set(title="validation transcript loss", xlabel="step", ylabel="loss (nats)")
        for ax in (ax_train, ax_val):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"study {study}: learning curves")
    _save(fig, out_png)


def plot_contrasts(study: str, contrasts: pd.DataFrame, out_png, confidence: float) -> None:
    """contrasts.csv: one panel per axis and metric, the paired difference against test SNR, one
    line per modality set (and other axes' values), CI bars, and the zero line to read them by."""
    from dmlm.report.contrasts import labels
    from dmlm.report.tables import snr_order

    panels = list(contrasts.groupby(["axis", "metric"], sort=False)) if len(contrasts) else []
    fig, grid = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.4), squeeze=False)
    if not panels:
        _empty(grid[0, 0], "no paired contrasts: the study varies no axis besides the modality set")
    for ax, ((axis, metric), frame) in zip(grid[0], panels):
        columns = snr_order(frame["snr"])
        x = np.arange(len(columns))
        lines = list(frame.assign(label=labels(frame, metric=False)).groupby("label", sort=False))
        for i, (name, line_rows) in enumerate(lines):
            at = line_rows.set_index("snr").reindex(columns)
            mean, low, high = (100 * at[c].to_numpy(float) for c in ("difference", "ci_low", "ci_high"))
            dodge = (i - (len(lines) - 1) / 2) * 0.08  # lines side by side, not on top of each other
            ax.errorbar(x + dodge, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=name)
        ax.axhline(0, color="black", linewidth=0.8)
        what = "WER difference (points)" if metric == "wer" else "RB difference (points)"
        ax.set(xticks=list(x), xticklabels=[str(c) for c in columns], xlabel="test SNR (dB)", ylabel=what,
               title=f"{axis}: {what.split(' (')[0]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"study {study}: paired contrasts, {100 * confidence:g}% bootstrap intervals")
    _save(fig, out_png)


def plot_all(study: str, tables: dict, curves: pd.DataFrame, axes: list[str], out_dir, confidence: float) -> None:
    out_dir = Path(out_dir)
    plot_wer_rb(study, tables["wer"], tables["rb"], axes, out_dir / "rb.png", confidence)
    plot_wer_heatmap(study, tables["wer"], axes, out_dir / "wer_heatmap.png")
    plot_perceptual(study, tables["perceptual"], axes, out_dir / "perceptual.png", confidence)
    plot_training(study, curves, tables["wer"], axes, out_dir / "training.png")
    plot_contrasts(study, tables["contrasts"], out_dir / "contrasts.png", confidence)
