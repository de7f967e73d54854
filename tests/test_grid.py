"""The grid: runs named by their axes, shared runs trained once, params hold what a run uses."""

import copy
from pathlib import Path

import yaml

from dmlm import grid

ROOT = Path(__file__).resolve().parents[1]


def config():
    return yaml.safe_load((ROOT / "workflow_config.yaml").read_text())


def test_run_names_round_trip():
    name = grid.run_name("A+L", "mfcc+pixels", "mix", "opt-small", "paper", 2)
    assert name == "A+L.mfcc+pixels.mix.opt-small.paper.s2"
    assert grid.parse_run_name(name) == dict(
        modalities="A+L", encoders="mfcc+pixels", train_noise="mix", backbone="opt-small",
        loss_weights="paper", seed=2,
    )
    assert grid.run_encoders(name) == {"audio": "mfcc", "lips": "pixels"}
    assert grid.run_encoders("A+O.mfcc.mix.b.w.s0") == {"audio": "mfcc"}  # OCR is text: no codebook


def test_encoder_axis_multiplies_only_the_runs_that_use_it():
    c = config()
    c["tokens"]["image"]["patches8"] = dict(c["tokens"]["image"]["patches"], patch=8)
    c["studies"]["modalities"]["encoders"] = {"image": ["patches", "patches8"]}
    runs = grid.runs_table(c)
    assert sorted(runs["run"]) == sorted([
        "A.mfcc.mix.opt-small.paper.s0", "A+L.mfcc+pixels.mix.opt-small.paper.s0",
        "A+I.mfcc+patches.mix.opt-small.paper.s0", "A+I.mfcc+patches8.mix.opt-small.paper.s0",
        "A+O.mfcc.mix.opt-small.paper.s0",
    ])


def test_conditions():
    assert grid.cond_of_snr("clean") == "clean"
    assert grid.cond_of_snr(-10) == "snr-10"
    assert grid.snr_of_cond("snr-10") == -10 and grid.snr_of_cond("snr5") == 5


def test_runs_shared_by_two_studies_are_trained_once():
    c = config()
    c["studies"]["second"] = copy.deepcopy(c["studies"]["modalities"])
    c["studies"]["second"]["modalities"] = ["A", "A+L+I+O"]
    c["studies"]["second"]["seeds"] = 2
    runs = grid.runs_table(c)
    assert runs["run"].is_unique
    # 4 sets x 1 seed, plus A s1, A+L+I+O s0, A+L+I+O s1 (A s0 is shared)
    assert len(runs) == 4 + 3
    evals = grid.evals_table(c)
    assert len(evals) == 4 * 4 + 2 * 2 * 4


def test_run_settings_hold_only_what_the_run_uses():
    c = config()
    run = "A+O.mfcc.mix.opt-small.paper.s0"
    settings = grid.run_settings(c, run)
    assert settings["modalities"] == ["audio", "ocr"]
    assert set(settings["loss_weights"]) == {"audio", "ocr", "transcript"}
    assert settings["encoders"] == {"audio": "mfcc"}
    before = grid.run_settings(c, run)
    c["loss_weights"]["paper"]["lips"] = 0.9  # not read by an A+O run
    assert grid.run_settings(c, run) == before
    c["loss_weights"]["paper"]["ocr"] = 0.9
    assert grid.run_settings(c, run) != before


def test_a_recipe_with_its_own_placement_is_tested_with_it():
    c = config()
    c["noise"]["train_noise"]["whole"] = {"fraction_noisy": 0.5, "snrs": [0, -10], "placement": "whole"}
    c["studies"]["modalities"]["train_noise"] = ["mix", "whole"]
    evals = grid.evals_table(c)
    conds = set(evals.loc[evals["train_noise"] == "whole", "cond"])
    assert conds == {"clean", "snr10@whole", "snr0@whole", "snr-10@whole"}
    assert set(evals.loc[evals["train_noise"] == "mix", "cond"]) == {"clean", "snr10", "snr0", "snr-10"}
    assert grid.placement_of_cond(c, "snr-10@whole") == "whole"
    assert grid.placement_of_cond(c, "snr-10") == "second_half"
    assert grid.placement_of_cond(c, "mix-whole") == "whole"
    assert grid.snr_of_cond("snr-10@whole") == -10


def test_training_noise_without_noise_is_clean_audio():
    c = config()
    c["noise"]["train_noise"]["none"] = {"fraction_noisy": 0.0, "snrs": []}
    assert grid.train_cond(c, "none") == "clean"
    assert grid.train_cond(c, "mix") == "mix-mix"
