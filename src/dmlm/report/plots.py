"""Figures of a study: WER and RB against test SNR, one line per modality set."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from dmlm.report.tables import pivot  # noqa: E402
from dmlm.storage import atomic_path  # noqa: E402


def plot_wer_rb(study: str, wer: pd.DataFrame, rb: pd.DataFrame, out_png: str | Path) -> None:
    wer_table, rb_table = pivot(wer, "wer") * 100, (pivot(rb, "rb") * 100 if len(rb) else None)
    fig, (ax_wer, ax_rb) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [str(c) for c in wer_table.columns]
    x = range(len(labels))
    for label, values in wer_table.iterrows():
        ax_wer.plot(x, values.to_numpy(), marker="o", label=str(label))
    ax_wer.set(title="WER", xlabel="test SNR (dB)", ylabel="WER (%)", xticks=list(x), xticklabels=labels)
    if rb_table is not None:
        for label, values in rb_table.iterrows():
            ax_rb.plot(x, values.reindex(wer_table.columns).to_numpy(), marker="o", label=str(label))
    ax_rb.axhline(0, color="grey", lw=0.8)
    ax_rb.set(title="Relative benefit over audio only", xlabel="test SNR (dB)",
              ylabel="RB (%)", xticks=list(x), xticklabels=labels)
    for ax in (ax_wer, ax_rb):
        ax.grid(alpha=0.3)
        ax.legend(title="run", fontsize=8)
    fig.suptitle(f"study {study}: mean over {wer['seed'].nunique()} seed(s)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
