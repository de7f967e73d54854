"""Which preset's outputs a results folder holds, so that two presets never overwrite each other.

Output folders are named by names the config chooses (``corpus.dataset``, ``noise.bank.name``, the
tokenizer, backbone and study names, ...), not by the settings that determine their content. Two
presets that use one name with different settings would silently replace each other's outputs
(Snakemake reruns a job whose params changed). ``results/owners.json`` records, per output folder,
the settings it was made with and the presets (by ``name``) that use it; at start-up a preset is
refused a folder that another preset uses with other settings, with the key to rename. An edit of
a preset's own settings (same ``name``, no other user) reruns as usual.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dmlm import grid
from dmlm.errors import DmlmError

REGISTRY = "owners.json"


def claims(config: dict) -> dict[str, tuple[str, dict]]:
    """Output folder (or file) -> (the config key that names it, the settings its content follows
    from). Content made from another claimed folder names that folder (e.g. a mix names its bank),
    so a difference upstream is caught upstream."""
    from dmlm.config import used_encoders
    from dmlm.report.settings import report_settings

    data = config["corpus"]["dataset"]
    bank = config["noise"]["bank"]["name"]
    out = {
        f"results/corpus/{data}": ("corpus.dataset", {
            "seed": config["seed"], **{k: v for k, v in config["corpus"].items() if k != "dataset"}}),
        f"results/noise/{bank}": ("noise.bank.name", {"seed": config["seed"], **config["noise"]["bank"]}),
    }
    evals = grid.evals_table(config)
    runs = grid.runs_table(config)
    noisy = {c for c in evals["cond"] if c != "clean"}
    noisy |= {grid.train_cond(config, r) for r in runs["train_noise"]} - {"clean"}
    for cond in sorted(noisy):
        key = f"noise.train_noise.{cond.removeprefix('mix-')}" if cond.startswith("mix-") else "corpus.dataset"
        out[f"results/audio/{data}/{cond}"] = (key, {"bank": bank, **grid.mix_settings(config, cond)})
    for modality, name in sorted(used_encoders(config)):
        settings = {"sample_rate": config["corpus"]["speech"]["sample_rate"], **config["tokens"][modality][name]}
        for path in (f"results/codebooks/{data}/{modality}/{name}.npz", f"results/tokens/{data}/{modality}/{name}"):
            out[path] = (f"tokens.{modality}.{name}", settings)
    for textenc in grid.text_encoders(config):
        # the local tokenizer has a fixed name: only the dataset's name can keep two apart
        key, settings = ("corpus.dataset", config["tokens"]["text"]) if textenc == grid.LOCAL_TEXT else \
            (f"backbones.{textenc}", {"pretrained": config["backbones"][textenc]["pretrained"]})
        for field in ("text", "transcript", "ocr"):
            out[f"results/tokens/{data}/{field}/{textenc}"] = (key, settings)
    for run in runs["run"]:
        axes = grid.parse_run_name(run)
        out[f"results/runs/{run}"] = (f"backbones.{axes['backbone']}", {
            "dataset": data, "train_audio": grid.train_cond(config, axes["train_noise"]),
            **grid.run_settings(config, run), "evaluation": config["evaluation"]})
    for study in config["studies"]:
        out[f"results/report/{study}"] = (f"studies.{study}", {"dataset": data, **report_settings(config, study)})
    # as stored: JSON values (tuples become lists, keys strings)
    return {path: (key, json.loads(json.dumps(settings, sort_keys=True, default=str)))
            for path, (key, settings) in out.items()}


def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))]
    return [] if old == new else [prefix or "<value>"]


def check(config: dict, registry: dict) -> dict:
    """The registry with this preset's claims added; DmlmError naming each folder that another
    preset uses with other settings, the differing settings and the key to rename."""
    name = config["name"]
    updated, problems = dict(registry), []
    for path, (key, settings) in claims(config).items():
        entry = registry.get(path)
        others = sorted(set(entry["presets"]) - {name}) if entry else []
        if entry and entry["settings"] != settings and others:
            diff = ", ".join(differences(entry["settings"], settings)[:5])
            problems.append(
                f"{path} holds the outputs of preset {', '.join(map(repr, others))}, made with other settings "
                f"({diff}); preset {name!r} would overwrite them: give it another name in this preset "
                f"(config key {key})")
        elif entry and entry["settings"] == settings:
            updated[path] = {"presets": sorted({*entry["presets"], name}), "settings": settings}
        else:
            updated[path] = {"presets": [name], "settings": settings}
    if problems:
        raise DmlmError("outputs of another preset are in the way:\n  " + "\n  ".join(problems))
    return updated


def read_registry(results: Path) -> dict:
    path = Path(results) / REGISTRY
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DmlmError(f"{path} is not valid JSON ({err}); it records which preset made each results "
                        "folder: restore it, or delete it to record them afresh") from None


def claim_outputs(config: dict, results: str | os.PathLike = "results", record: bool = True) -> None:
    """Check this preset's output folders against ``results/owners.json``; with ``record``, claim
    them there (a dry run only checks)."""
    from dmlm.storage import write_json

    results = Path(results)
    updated = check(config, read_registry(results))
    if record:
        write_json(results / REGISTRY, updated)  # atomic
