"""Config validation: bad values stop before any job runs, naming the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dmlm import grid
from dmlm.config import load_config, validate_config
from dmlm.errors import DmlmError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [ROOT / "workflow_config.yaml", *sorted((ROOT / "presets").glob("*.yaml"))]


@pytest.fixture(scope="module")
def default_config():
    return yaml.safe_load((ROOT / "workflow_config.yaml").read_text())


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_shipped_presets_are_valid(path):
    config = load_config(path)
    assert len(grid.runs_table(config)) >= 1


def test_default_preset_meets_the_issue_floor(default_config):
    study_sets = {m for s in default_config["studies"].values() for m in s["modalities"]}
    assert {"A", "A+L", "A+I", "A+O"} <= study_sets
    assert default_config["corpus"]["splits"]["test"] >= 200


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["studies"]["modalities"]["modalities"].append("A+X"), "studies.modalities.modalities[4]"),
        (lambda c: c["studies"]["modalities"]["test_snrs"].__setitem__(1, "ten"), "studies.modalities.test_snrs[1]"),
        (lambda c: c["studies"]["modalities"]["test_snrs"].__setitem__(1, "10"), "studies.modalities.test_snrs[1]"),
        (lambda c: c["studies"]["modalities"].__setitem__("seeds", -1), "studies.modalities.seeds"),
        (lambda c: c["loss_weights"]["paper"].__setitem__("audio", "high"), "loss_weights.paper.audio"),
        (lambda c: c["loss_weights"]["paper"].__setitem__("image", -0.5), "loss_weights.paper.image"),
        (lambda c: c["studies"]["modalities"]["backbone"].__setitem__(0, "gpt9"), "studies.modalities.backbone"),
        (lambda c: c["studies"]["modalities"].__setitem__("modalities", ["A+A"]), "studies.modalities.modalities"),
        (lambda c: c["corpus"]["ocr"].__setitem__("engine", "magic"), "corpus.ocr.engine"),
        (lambda c: c["backbones"]["opt-small"].__setitem__("pretrained", "/nonexistent/opt"), "backbones.opt-small.pretrained"),
        (lambda c: c["studies"]["modalities"].__setitem__("encoders", {"audio": ["hubert"]}), "studies.modalities.encoders.audio"),
        (lambda c: c["tokens"]["audio"].__setitem__("mfcc", {"encoder": "whisper_kmeans", "n_units": 64, "fit_utterances": 10, "frame_stack": 1, "collapse_repeats": True, "weights": "/nonexistent/whisper"}), "tokens.audio.mfcc"),
        (lambda c: c["studies"]["modalities"].__setitem__("order", ["sideways"]), "studies.modalities.order[0]"),
        (lambda c: c["studies"]["modalities"].__setitem__("order", ["ALIA"]), "studies.modalities.order[0]"),
        (lambda c: c["studies"]["modalities"].__setitem__("layout", ["blocked", "zigzag"]), "studies.modalities.layout[1]"),
        (lambda c: c["loss_weights"]["paper"].__setitem__("variant", "fair"), "loss_weights.paper.variant"),
        (lambda c: c["loss_weights"]["paper"].__setitem__("transcript", -1), "loss_weights.paper.transcript"),
        (lambda c: c.__setitem__("sequence", {"over_length": "truncate"}), "sequence.over_length"),
        (lambda c: c["studies"]["modalities"].update(modalities=["A", "A+O"], layout=["interleaved"]), "studies.modalities.layout"),
        (lambda c: c["training"].__setitem__("per_backbone", {"gpt9": {"lr": 1e-3}}), "training.per_backbone.gpt9"),
        (lambda c: c["training"].__setitem__("per_backbone", {"opt-small": {"max_steps": 10}}), "training.per_backbone.opt-small"),
        (lambda c: c["training"].__setitem__("per_backbone", {"opt-small": {"lr": -1}}), "training.per_backbone.opt-small.lr"),
        (lambda c: c["training"].__setitem__("per_backbone", {"opt-small": {"per_modalities": {"A+O": {"max_steps": 9}}}}),
         "training.per_backbone.opt-small.per_modalities.A+O"),
        (lambda c: c["training"].__setitem__("per_backbone", {"opt-small": {"per_modalities": {"A+X": {"lr": 1e-3}}}}),
         "training.per_backbone.opt-small.per_modalities"),
        (lambda c: c["training"].__setitem__("per_backbone", {"opt-small": {"per_modalities": {"L+I+A": {"lr": 1e-3}}}}),
         "training.per_backbone.opt-small.per_modalities.L+I+A"),
        (lambda c: c["training"].__setitem__("per_backbone", {"opt-small": {"per_modalities": {"A+A": {"lr": 1e-3}}}}),
         "training.per_backbone.opt-small.per_modalities.A+A"),
    ],
    ids=["unknown-modality", "snr-as-word", "snr-as-string", "negative-seeds", "weight-not-number",
         "negative-weight", "unknown-backbone", "repeated-modality", "unknown-ocr-engine", "missing-pretrained",
         "unknown-encoder-name", "missing-encoder-weights", "unknown-order", "order-not-a-permutation",
         "unknown-layout", "unknown-loss-variant", "negative-transcript-weight", "unknown-over-length-policy",
         "interleaved-without-audio-and-lips", "per-backbone-unknown-backbone", "per-backbone-not-an-optimiser-key",
         "per-backbone-negative-lr", "per-modalities-not-an-optimiser-key", "per-modalities-not-a-modality-set",
         "per-modalities-set-no-study-runs", "per-modalities-repeated-modality"],
)
def test_bad_values_name_the_key(default_config, mutate, key):
    config = copy.deepcopy(default_config)
    mutate(config)
    with pytest.raises(DmlmError) as err:
        validate_config(config)
    assert key in str(err.value)


def test_snakemake_stops_before_any_job(tmp_path, default_config):
    """A bad value reaches the user through snakemake itself, before any job runs."""
    config = copy.deepcopy(default_config)
    config["studies"]["modalities"]["test_snrs"] = ["clean", "ten"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad), "--directory", str(tmp_path),
         "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "studies.modalities.test_snrs[1]" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
