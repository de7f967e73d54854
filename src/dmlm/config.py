"""Load and check a workflow config: the JSON schema first, then the references between sections.

Both checks run when Snakemake parses the workflow, so a bad value stops the run before any job
starts, with a message that names the key (for example ``studies.modalities.test_snrs[1]``).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from dmlm.errors import DmlmError

SCHEMA_PATH = Path(__file__).parent / "schema" / "config.schema.yaml"


def key_path(parts) -> str:
    """['studies', 'a', 'test_snrs', 1] -> 'studies.a.test_snrs[1]'."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def check_schema(config: dict) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            # oneOf failures: say what each alternative wanted, not just "not valid under any"
            detail = err.message
            if err.context:
                detail += " (" + "; ".join(sorted({c.message for c in err.context})) + ")"
            lines.append(f"config key {key_path(err.absolute_path)}: {detail}")
        more = f"\n(and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise DmlmError("invalid workflow config:\n  " + "\n  ".join(lines) + more)


def check_references(config: dict) -> None:
    """Names a study uses must exist in the sections that define them."""
    from dmlm.grid import LOCAL_TEXT

    problems = []
    for study, spec in config["studies"].items():
        for axis, section, where in (
            ("backbone", config["backbones"], "backbones"),
            ("loss_weights", config["loss_weights"], "loss_weights"),
            ("train_noise", config["noise"]["train_noise"], "noise.train_noise"),
        ):
            for name in spec[axis]:
                if name not in section:
                    problems.append(
                        f"config key studies.{study}.{axis}: '{name}' is not defined under {where} "
                        f"(defined: {', '.join(sorted(section))})"
                    )
        for modality, names in spec.get("encoders", {}).items():
            for name in names:
                if name not in config["tokens"][modality]:
                    problems.append(
                        f"config key studies.{study}.encoders.{modality}: '{name}' is not defined under "
                        f"tokens.{modality} (defined: {', '.join(sorted(config['tokens'][modality]))})"
                    )
        for modset in spec["modalities"]:
            letters = modset.split("+")
            if len(set(letters)) != len(letters):
                problems.append(f"config key studies.{study}.modalities: '{modset}' repeats a modality")
        if "interleaved" in spec.get("layout", []) and not any(
            {"A", "L"} <= set(m.split("+")) for m in spec["modalities"]
        ):
            problems.append(
                f"config key studies.{study}.layout: 'interleaved' merges audio and lips, but no modality "
                f"set of the study has both (A+L); every run would be the blocked one"
            )
    for name, backbone in config["backbones"].items():
        if "heads" in backbone and backbone["hidden"] % backbone["heads"]:  # OPT only (Mamba has no heads)
            problems.append(
                f"config key backbones.{name}.heads: hidden size {backbone['hidden']} is not "
                f"divisible by {backbone['heads']} heads"
            )
        pretrained = backbone.get("pretrained")
        if pretrained and name == LOCAL_TEXT:
            problems.append(
                f"config key backbones.{name}: a pretrained backbone may not be named '{LOCAL_TEXT}' "
                "(the name of the locally trained text tokenizer)"
            )
    problems += check_backbone_recipes(config)
    problems += check_encoders(config)
    problems += check_text(config)
    problems += check_inputs(config)
    if problems:
        raise DmlmError("invalid workflow config:\n  " + "\n  ".join(problems))


def check_backbone_recipes(config: dict) -> list[str]:
    """`training.per_backbone` names defined backbones, and its `per_modalities` sets that a study
    runs on that backbone (a set no run has is most likely a typo, which would tune nothing)."""
    from dmlm import grid

    problems = []
    for name, recipe in config["training"].get("per_backbone", {}).items():
        if name not in config["backbones"]:
            problems.append(f"config key training.per_backbone.{name}: no backbone of that name "
                            f"(backbones: {', '.join(config['backbones'])})")
            continue
        studied = sorted({modset for spec in config["studies"].values() if name in spec["backbone"]
                          for modset in spec["modalities"]})
        for modset in recipe.get("per_modalities", {}):
            # matched as grid.run_training matches it: letters in any order, a repeated one matches none
            if not any(grid.same_modalities(modset, grid.modality_names(run_set)) for run_set in studied):
                problems.append(
                    f"config key training.per_backbone.{name}.per_modalities.{modset}: no study runs "
                    f"{name} on that modality set (its sets: {', '.join(studied) or 'none'})")
    return problems


def check_inputs(config: dict) -> list[str]:
    """What jobs would find out late (dmlm.config_checks): the files a config names, the data sizes
    its splits and codebooks need, the training-noise SNRs."""
    from dmlm import config_checks as checks

    problems = checks.check_train_noise(config) + checks.check_splits(config)
    problems += checks.check_codebook_sizes(config, used_encoders(config))
    for name, backbone in config["backbones"].items():
        if backbone.get("pretrained"):
            problems += checks.check_pretrained(name, backbone)
    return problems + checks.check_noise_bank(config)


def used_encoders(config: dict) -> set[tuple[str, str]]:
    """(modality, name) of every named tokenizer some study uses."""
    from dmlm import grid

    evals = grid.evals_table(config)
    return {
        (modality, name)
        for modality in grid.DISCRETE
        for name in evals[f"{modality}_encoder"].unique()
        if name
    }


def check_encoders(config: dict) -> list[str]:
    """Each used tokenizer's own checks (e.g. a pretrained encoder's weights folder), before any job."""
    from dmlm.tokens.registry import check_settings

    problems = []
    for modality, name in sorted(used_encoders(config)):
        if name not in config["tokens"][modality]:
            continue  # reported by check_references
        settings = {**config["tokens"][modality][name], "seed": config["seed"],
                    "sample_rate": config["corpus"]["speech"]["sample_rate"]}
        try:
            check_settings(modality, settings)
        except DmlmError as err:
            problems.append(f"config key tokens.{modality}.{name}: {err}")
    return problems


def check_text(config: dict) -> list[str]:
    """The local text tokenizer's settings (digits, written forms), before any job; reading the
    written forms back is checked on the transcripts when the tokenizer is trained."""
    from dmlm.tokens.text import check_text_settings

    try:
        check_text_settings(config["tokens"]["text"])
    except DmlmError as err:
        return [f"config key {err}"]
    return []


def validate_config(config: dict) -> dict:
    check_schema(config)
    check_references(config)
    return config


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DmlmError(f"config file not found: {path}")
    return validate_config(read_config_file(path))


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML (or JSON) config file; DmlmError naming the file, and for a syntax
    error its line and column, or saying the file is empty."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))  # as Snakemake opens config files
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or ""
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context:  # e.g. "while parsing a flow mapping", opened on another line
            what = f"{what} ({context}{f' opened at line {start.line + 1}' if start else ''})"
        raise DmlmError(f"{path}: invalid YAML{where}: {what or err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DmlmError(f"cannot read config file {path}: {err}") from None
    if config is None:
        raise DmlmError(f"{path} is empty (no config keys; comments only)")
    if not isinstance(config, dict):
        raise DmlmError(f"{path}: expected a mapping of config keys at the top level, "
                        f"got a {type(config).__name__}")
    return config


def require_config(config: dict, files) -> None:
    """An empty workflow config (e.g. ``--configfile`` of ``{}`` with --replace-workflow-config):
    say so and name the files, not every missing key of the schema."""
    if not config:
        names = ", ".join(map(str, files)) or "none"
        raise DmlmError(f"the workflow config is empty (config files: {names})")


def register(subparsers) -> None:
    """``dmlm check-config FILE...``: Snakemake reads ``--configfile`` files itself, before the
    workflow's checks run, and says only "Config file is not valid JSON or YAML"; this names the
    file and line, then runs the workflow's checks."""
    p = subparsers.add_parser("check-config", help="check workflow config files (YAML, schema, references)")
    p.add_argument("files", nargs="+", help="config files, e.g. workflow_config.yaml presets/tiny.yaml")
    p.set_defaults(func=_check_files)


def _check_files(args) -> None:
    from dmlm import grid

    for path in args.files:
        config = load_config(path)
        print(f"{path}: valid ({len(grid.runs_table(config))} runs)")
