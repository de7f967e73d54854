"""Collect a study's evaluations into tidy tables (wer.csv, rb.csv) and a markdown summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmlm.errors import DmlmError
from dmlm.grid import AUDIO_ONLY
from dmlm.report.metrics import relative_benefit
from dmlm.storage import read_json

# an A+M run is compared with the audio-only run that differs from it only in the extra modalities
PAIRING = ["audio_encoder", "train_noise", "backbone", "loss_weights", "seed", "snr"]


# the axes that tell runs apart in tables and plots (those that vary within the study)
LABEL_AXES = ["modalities", "encoders", "train_noise", "backbone", "loss_weights"]


def label_axes(frame: pd.DataFrame) -> list[str]:
    """modalities, plus each axis that takes several values for one modality set (the encoders
    differ between sets by construction: they name only the set's own modalities)."""
    return [
        a for a in LABEL_AXES
        if a == "modalities" or (a in frame and frame.groupby("modalities")[a].nunique().max() > 1)
    ]


def snr_order(values) -> list:
    """clean first, then from the highest SNR to the lowest (left to right = more noise)."""
    numbers = sorted({v for v in values if v != "clean"}, reverse=True)
    return (["clean"] if "clean" in set(values) else []) + numbers


def collect_wer(evals: list[dict], runs_dir: str | Path) -> pd.DataFrame:
    """One row per run and test SNR, read from each evaluation's wer.json."""
    rows, missing = [], []
    for ev in evals:
        path = Path(runs_dir) / ev["run"] / "eval" / ev["cond"] / "wer.json"
        if not path.exists():
            missing.append(str(path))
            continue
        result = read_json(path)
        rows.append({**ev, **{k: result[k] for k in
                              ("wer", "substitutions", "deletions", "insertions", "ref_words", "utterances")}})
    if missing:
        raise DmlmError("evaluations missing for the report:\n  " + "\n  ".join(missing))
    return pd.DataFrame(rows)


def relative_benefits(wer: pd.DataFrame) -> pd.DataFrame:
    """RB of every non-audio-only row against the audio-only row with the same pairing keys."""
    audio = wer[wer["modalities"] == AUDIO_ONLY].set_index(PAIRING)["wer"]
    rows = []
    for row in wer[wer["modalities"] != AUDIO_ONLY].itertuples(index=False):
        key = tuple(getattr(row, k) for k in PAIRING)
        wer_a = audio.get(key, np.nan)
        rows.append(
            dict(
                run=row.run,
                modalities=row.modalities,
                encoders=row.encoders,
                **{k: getattr(row, k) for k in PAIRING},
                wer=row.wer,
                wer_audio=wer_a,
                delta_wer=wer_a - row.wer,
                rb=np.nan if np.isnan(wer_a) else relative_benefit(wer_a, row.wer),
            )
        )
    return pd.DataFrame(
        rows, columns=["run", "modalities", "encoders", *PAIRING, "wer", "wer_audio", "delta_wer", "rb"]
    )


def pivot(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean over seeds; rows = runs (modality set and any other axis the study varies),
    columns = test SNR in noise order."""
    axes = label_axes(frame)
    table = frame.pivot_table(index=axes, columns="snr", values=value, aggfunc="mean")
    if len(axes) > 1:  # one readable label per row: "A+I / craft"
        table.index = [" / ".join(map(str, key)) for key in table.index]
        table.index.name = " / ".join(axes)
    return table[[c for c in snr_order(frame["snr"]) if c in table.columns]]


def markdown(study: str, wer: pd.DataFrame, rb: pd.DataFrame) -> str:
    seeds = wer["seed"].nunique()
    lines = [
        f"# Study `{study}`",
        "",
        f"WER (%) on the test split by test SNR (dB), mean over {seeds} seed(s); "
        f"{int(wer['utterances'].iloc[0])} utterances per cell.",
        "",
        (pivot(wer, "wer") * 100).round(1).to_markdown(),
        "",
        "Relative benefit RB = (WER_A - WER_{A+M}) / WER_A (%) over the audio-only run with the same "
        "backbone, training noise, loss weights and seed; positive = the extra modalities help; "
        "NaN where WER_A is 0 or no audio-only run is in the study.",
        "",
    ]
    lines.append((pivot(rb, "rb") * 100).round(1).to_markdown() if len(rb) else "(no multimodal runs)")
    return "\n".join(lines) + "\n"
