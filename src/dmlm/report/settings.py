"""What a study's report reads: its evaluations, the permuted evaluations, and the report settings.

Both the Snakemake rule (rules/report.smk) and ``dmlm report --config`` build the settings here,
so the report of a partial results folder asks for exactly the files the workflow would.
"""

from __future__ import annotations

from pathlib import Path

from dmlm.errors import DmlmError
from dmlm.grid import evals_table, modality_names

REPORT_DEFAULTS = {"bootstrap_resamples": 1000, "confidence": 0.95, "bootstrap_seed": 0}
PERMUTATION_SEED = 0  # default of evaluation.permutation_seed


def report_options(config: dict) -> dict:
    return {**REPORT_DEFAULTS, **config.get("report", {})}


def permutation_seed(config: dict) -> int:
    return int(config["evaluation"].get("permutation_seed", PERMUTATION_SEED))


def extra_modalities(modset: str) -> list[str]:
    """The modalities of a set beyond audio, whose perceptual scores the report asks for."""
    return [m for m in modality_names(modset) if m != "audio"]


def report_settings(config: dict, study: str) -> dict:
    """The report's --settings: the study's evaluations (every column of ``grid.evals_table``, so
    axes added later reach the analyses), each backbone's family, and the statistics options."""
    if study not in config["studies"]:
        raise DmlmError(f"no study {study!r} in the config (studies: {', '.join(config['studies'])})")
    evals = evals_table(config)
    evals = evals[evals["study"] == study].drop(columns=["study"])
    backbones = sorted(evals["backbone"].unique())
    return {
        "study": study,
        "evals": evals.to_dict(orient="records"),
        "families": {b: config["backbones"][b].get("family", b) for b in backbones},
        "report": report_options(config),
    }


def eval_dir(runs_dir, run: str, cond: str) -> Path:
    return Path(runs_dir) / run / "eval" / cond


def permuted_dir(runs_dir, run: str, cond: str, modality: str) -> Path:
    return eval_dir(runs_dir, run, cond) / f"perm-{modality}"


def permuted_evals(evals: list[dict]) -> list[dict]:
    """One entry per (multimodal evaluation, extra modality): ``{**eval, "permuted": modality}``."""
    return [{**ev, "permuted": m} for ev in evals for m in extra_modalities(ev["modalities"])]
