"""Read a study's evaluation files: corpus WER and speed (wer.json), per-utterance error counts
(hyps.tsv), permuted evaluations and learning curves.

A file that is absent or unreadable does not stop the report: it is recorded as a ``Missing``
entry (the file and why, e.g. the run has no checkpoint because its training failed), listed in
summary.md and on stderr, and the report is made from what exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dmlm.evaluation.wer import utterance_counts
from dmlm.report.settings import eval_dir, permuted_dir, permuted_evals
from dmlm.storage import read_json, read_table

COUNTS = ["substitutions", "deletions", "insertions", "ref_words"]
STREAM_TOKENS = "mean_tokens_"  # column prefix: mean tokens per utterance of each stream (sequence noise)
SPEED = ["decode_seconds", "utterances_per_s", "generated_tokens", "tokens_per_s", "input_tokens",
         "input_tokens_per_s", "device", "threads"]


@dataclass(frozen=True)
class Missing:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass
class Utterances:
    """Per-utterance errors (S + D + I) and reference words of one evaluation, in test-id order."""

    ids: np.ndarray
    errors: np.ndarray
    ref_words: np.ndarray


@dataclass
class Collected:
    wer: pd.DataFrame  # one row per evaluation found: the eval's axes, WER, counts, speed, tokens_*
    utterances: dict = field(default_factory=dict)  # (run, cond) -> Utterances
    permuted: pd.DataFrame = None  # one row per permuted evaluation found (+ column "permuted")
    permuted_utterances: dict = field(default_factory=dict)  # (run, cond, modality) -> Utterances
    curves: pd.DataFrame = None  # learning curves of the study's runs, with column "run"
    missing: list = field(default_factory=list)


def why_missing(runs_dir, run: str, path: Path) -> str:
    """A short reason for an absent evaluation file, from what the run folder holds."""
    run_dir = Path(runs_dir) / run
    if not run_dir.exists():
        return "run not started: no run folder"
    if not (run_dir / "checkpoint.pt").exists():
        return "no checkpoint: training failed or did not finish"
    if path.name == "train_log.tsv":
        return "no training log beside the checkpoint"
    if not path.parent.exists():
        return "not evaluated"
    return "evaluation failed or did not finish"


def read_utterances(hyps_tsv: Path) -> Utterances:
    """Per-utterance counts: hyps.tsv's columns when it has them, else recomputed with jiwer from
    its reference and hypothesis (hyps.tsv files written before the counts were stored)."""
    table = read_table(hyps_tsv)
    if not set(COUNTS) <= set(table.columns):
        counts = pd.DataFrame([utterance_counts(str(r), str(h))
                               for r, h in zip(table["reference"], table["hypothesis"])],
                              columns=COUNTS)
        table = pd.concat([table.reset_index(drop=True), counts], axis=1)
    errors = table[["substitutions", "deletions", "insertions"]].sum(axis=1).to_numpy(dtype=float)
    return Utterances(ids=table["id"].astype(str).to_numpy(), errors=errors,
                      ref_words=table["ref_words"].to_numpy(dtype=float))


def _read_eval(folder: Path, ev: dict, runs_dir, missing: list):
    """(row, utterances) of one evaluation folder, or None (recorded in ``missing``)."""
    rows = []
    for name in ("wer.json", "hyps.tsv"):
        path = folder / name
        if not path.exists():
            missing.append(Missing(str(path), why_missing(runs_dir, ev["run"], path)))
            return None
        rows.append(path)
    try:
        result = read_json(rows[0])
        utts = read_utterances(rows[1])
    except Exception as err:  # a truncated or foreign file: name it, keep going
        missing.append(Missing(str(folder), f"unreadable: {err}"))
        return None
    row = {**ev, "wer": result["wer"], "utterances": result["utterances"], **{k: result[k] for k in COUNTS}}
    row.update({k: result.get(k, np.nan) for k in SPEED})
    if "tokens_per_s" not in result and result.get("decode_seconds"):  # wer.json of an earlier version
        row["tokens_per_s"] = result["generated_tokens"] / result["decode_seconds"]
    for stream, n in (result.get("tokens_per_utterance") or {}).items():
        row[f"{STREAM_TOKENS}{stream}"] = n
    return row, utts


def collect(evals: list[dict], runs_dir) -> Collected:
    missing: list[Missing] = []
    rows, utterances = [], {}
    for ev in evals:
        got = _read_eval(eval_dir(runs_dir, ev["run"], ev["cond"]), ev, runs_dir, missing)
        if got:
            rows.append(got[0])
            utterances[(ev["run"], ev["cond"])] = got[1]
    prow, putts = [], {}
    for ev in permuted_evals(evals):
        got = _read_eval(permuted_dir(runs_dir, ev["run"], ev["cond"], ev["permuted"]), ev, runs_dir, missing)
        if got:
            prow.append(got[0])
            putts[(ev["run"], ev["cond"], ev["permuted"])] = got[1]
    curves = []
    for run in dict.fromkeys(ev["run"] for ev in evals):
        path = Path(runs_dir) / run / "train_log.tsv"
        if path.exists():
            curves.append(read_table(path).assign(run=run))
        else:
            missing.append(Missing(str(path), why_missing(runs_dir, run, path)))
    columns = list(evals[0]) if evals else []
    return Collected(
        wer=pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*columns, "wer", *COUNTS]),
        utterances=utterances,
        permuted=pd.DataFrame(prow) if prow else pd.DataFrame(columns=[*columns, "permuted", "wer"]),
        permuted_utterances=putts,
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run", "step"]),
        missing=list(dict.fromkeys(missing)),  # an evaluation two studies' rows share is named once
    )
