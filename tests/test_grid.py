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
        modalities="A+L", encoders="mfcc+pixels", layout="blocked", train_noise="mix", backbone="opt-small",
        loss_weights="paper", seed=2,
    )
    assert grid.run_name(**grid.parse_run_name(name)) == name
    interleaved = grid.run_name("L+A", "pixels+mfcc", "mix", "opt-small", "paper", 2, layout="interleaved")
    assert interleaved == "L+A.pixels+mfcc.interleaved.mix.opt-small.paper.s2"
    assert grid.parse_run_name(interleaved)["layout"] == "interleaved"
    assert grid.run_name(**grid.parse_run_name(interleaved)) == interleaved
    assert grid.run_encoders(interleaved) == {"lips": "pixels", "audio": "mfcc"}
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


def test_the_first_listed_tokenizer_is_the_default_even_for_a_second_config_in_one_process():
    # the runs table is cached per config: a config that differs only in which tokenizer comes
    # first must not get the first config's runs (a cache key with sorted keys did)
    c = config()
    c["tokens"]["lips"]["pixels2"] = dict(c["tokens"]["lips"]["pixels"], n_units=32)
    swapped = copy.deepcopy(c)
    swapped["tokens"]["lips"] = {k: c["tokens"]["lips"][k] for k in reversed(list(c["tokens"]["lips"]))}
    assert "A+L.mfcc+pixels.mix.opt-small.paper.s0" in set(grid.runs_table(c)["run"])
    assert "A+L.mfcc+pixels2.mix.opt-small.paper.s0" in set(grid.runs_table(swapped)["run"])
    assert "A+L.mfcc+pixels.mix.opt-small.paper.s0" in set(grid.runs_table(c)["run"])


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


def test_the_curriculum_is_kept_only_beside_the_named_modalities():
    """`training.drop_audio_beside: [ocr]`: A+O and A+L+I+O keep the curriculum exactly as before
    (their runs are not retrained), A+L and A+I train without it, and audio-only runs, which
    ignore it, keep their settings as written."""
    c = config()
    c["training"].update(drop_audio=0.5, drop_audio_until=0.5)
    before = {run: grid.run_settings(c, run) for run in
              ("A.mfcc.mix.opt-small.paper.s0", "A+O.mfcc.mix.opt-small.paper.s0", "A+L.mfcc+pixels.mix.opt-small.paper.s0")}
    c["training"]["drop_audio_beside"] = ["ocr"]
    after = {run: grid.run_settings(c, run) for run in before}
    assert after["A.mfcc.mix.opt-small.paper.s0"] == before["A.mfcc.mix.opt-small.paper.s0"]
    assert after["A+O.mfcc.mix.opt-small.paper.s0"] == before["A+O.mfcc.mix.opt-small.paper.s0"]
    lips = after["A+L.mfcc+pixels.mix.opt-small.paper.s0"]["training"]
    assert "drop_audio" not in lips and "drop_audio_until" not in lips and "drop_audio_beside" not in lips
    assert {k: v for k, v in lips.items()} == {k: v for k, v in c["training"].items() if not k.startswith("drop_audio")}


def test_a_backbone_recipe_changes_only_that_backbones_runs():
    """`training.per_backbone.<name>` overrides that backbone's optimisation settings; the other
    backbone's runs keep their settings exactly (not retrained), and the key itself reaches no run."""
    c = config()
    mamba = next(name for name, spec in c["backbones"].items() if spec["family"] == "mamba")
    opt_run, mamba_run = "A.mfcc.mix.opt-small.paper.s0", f"A.mfcc.mix.{mamba}.paper.s0"
    before = {run: grid.run_settings(c, run) for run in (opt_run, mamba_run)}
    c["training"]["per_backbone"] = {mamba: {"lr": 4e-3, "weight_decay": 0.1}}
    assert grid.run_settings(c, opt_run) == before[opt_run]
    tuned = grid.run_settings(c, mamba_run)["training"]
    assert tuned == dict(before[mamba_run]["training"], lr=4e-3, weight_decay=0.1)
    assert "per_backbone" not in tuned


def test_a_backbone_recipe_per_modality_set_changes_only_those_runs():
    """`per_backbone.<name>.per_modalities.<set>` (letters in any order) tunes that backbone's runs of
    that set over the backbone's recipe; its other runs and the other backbone's keep their settings."""
    c = config()
    mamba = next(name for name, spec in c["backbones"].items() if spec["family"] == "mamba")
    runs = ["A.mfcc.mix.opt-small.paper.s0", "A+O.mfcc.mix.opt-small.paper.s0",
            f"A.mfcc.mix.{mamba}.paper.s0", f"A+O.mfcc.mix.{mamba}.paper.s0"]
    c["training"]["per_backbone"] = {mamba: {"lr": 4e-3, "weight_decay": 0.1}}
    before = {run: grid.run_settings(c, run) for run in runs}
    c["training"]["per_backbone"][mamba]["per_modalities"] = {"O+A": {"lr": 8e-3}}
    after = {run: grid.run_settings(c, run) for run in runs}
    assert [after[run] == before[run] for run in runs] == [True, True, True, False]
    tuned = after[f"A+O.mfcc.mix.{mamba}.paper.s0"]["training"]
    assert tuned == dict(before[f"A+O.mfcc.mix.{mamba}.paper.s0"]["training"], lr=8e-3)
    assert tuned["weight_decay"] == 0.1 and "per_modalities" not in tuned


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


def test_orders():
    assert grid.ordered("L+A+O", "audio_first") == "A+L+O"
    assert grid.ordered("A+L+O", "audio_last") == "L+O+A"
    assert grid.ordered("L+A+O", "written") == "L+A+O"
    assert grid.ordered("A+L+I+O", "OILA") == "O+I+L+A"
    assert grid.ordered("A+I", "LIAO") == "I+A"
    assert grid.ordered("O", "audio_last") == "O"


def test_order_and_layout_are_study_axes_shared_where_they_change_nothing():
    c = config()
    c["studies"]["modalities"]["modalities"] = ["A", "A+L", "A+L+I"]
    c["studies"]["modalities"]["order"] = ["audio_first", "audio_last"]
    c["studies"]["modalities"]["layout"] = ["blocked", "interleaved"]
    runs = grid.runs_table(c)
    assert sorted(runs["run"]) == sorted([
        "A.mfcc.mix.opt-small.paper.s0",  # one audio-only run: order and layout change nothing
        "A+L.mfcc+pixels.mix.opt-small.paper.s0",
        "A+L.mfcc+pixels.interleaved.mix.opt-small.paper.s0",
        "L+A.pixels+mfcc.mix.opt-small.paper.s0",
        "L+A.pixels+mfcc.interleaved.mix.opt-small.paper.s0",
        "A+L+I.mfcc+pixels+patches.mix.opt-small.paper.s0",
        "A+L+I.mfcc+pixels+patches.interleaved.mix.opt-small.paper.s0",
        "L+I+A.pixels+patches+mfcc.mix.opt-small.paper.s0",
        "L+I+A.pixels+patches+mfcc.interleaved.mix.opt-small.paper.s0",
    ])
    assert runs.set_index("run").loc["L+A.pixels+mfcc.interleaved.mix.opt-small.paper.s0", "layout"] == "interleaved"
    evals = grid.evals_table(c)
    # one row per (study, run, SNR), with the study's own axis values: 9 runs x 4 SNRs
    assert len(evals) == 9 * 4
    row = evals[(evals["modalities"] == "A+L") & (evals["order"] == "audio_last") & (evals["layout"] == "interleaved")]
    assert set(row["run"]) == {"L+A.pixels+mfcc.interleaved.mix.opt-small.paper.s0"}
    assert set(row["encoders"]) == {"mfcc+pixels"}  # the column is in the set's written order
    # the audio-only run is one run, listed with the first axis values
    audio = evals[evals["modalities"] == "A"]
    assert len(audio) == 4 and set(audio["run"]) == {"A.mfcc.mix.opt-small.paper.s0"}
    assert set(audio["order"]) == {"audio_first"} and set(audio["layout"]) == {"blocked"}

    settings = grid.run_settings(c, "L+I+A.pixels+patches+mfcc.interleaved.mix.opt-small.paper.s0")
    assert settings["modalities"] == ["lips", "image", "audio"]
    assert settings["encoders"] == {"lips": "pixels", "image": "patches", "audio": "mfcc"}
    assert settings["sequence"] == {"layout": "interleaved", "over_length": "error"}
    # the streams it reads: its modalities in order, then the times of the interleaved ones
    assert grid.run_input_streams("L+I+A.pixels+patches+mfcc.interleaved.mix.opt-small.paper.s0") == [
        "lips", "image", "audio", "lips.times", "audio.times",
    ]
    assert grid.run_input_streams("L+I+A.pixels+patches+mfcc.mix.opt-small.paper.s0") == ["lips", "image", "audio"]


def test_default_axes_keep_the_default_runs():
    c = config()
    plain = grid.runs_table(c)
    c["studies"]["modalities"]["order"] = ["audio_first"]
    c["studies"]["modalities"]["layout"] = ["blocked"]
    assert grid.runs_table(c).equals(plain)
    assert grid.run_settings(c, "A+L.mfcc+pixels.mix.opt-small.paper.s0")["sequence"] == {
        "layout": "blocked", "over_length": "error",
    }


def test_loss_weight_variant_and_over_length_reach_the_run_settings():
    c = config()
    c["loss_weights"]["counts"] = {"variant": "balanced", "audio": 1, "lips": 1, "image": 1, "ocr": 1, "transcript": 1}
    c["sequence"] = {"over_length": "drop"}
    settings = grid.run_settings(c, "A+O.mfcc.mix.opt-small.counts.s0")
    assert settings["loss_weights"] == {"variant": "balanced", "audio": 1, "ocr": 1, "transcript": 1}
    assert settings["sequence"] == {"layout": "blocked", "over_length": "drop"}


def test_run_pattern_matches_every_run_and_nothing_else():
    """The `run` wildcard constraint: built from the axes, it matches each run of the default and
    paper presets in full, and neither a path (a '/'), an undefined axis value nor a missing seed."""
    import re

    for c in (config(), yaml.safe_load((ROOT / "presets" / "paper.yaml").read_text())):
        pattern = re.compile(grid.run_pattern(c))
        runs = grid.runs_table(c)["run"]
        assert len(runs) and all(pattern.fullmatch(run) for run in runs)
        run = runs[0]
        backbone = grid.parse_run_name(run)["backbone"]
        for wrong in (f"{run}/eval/clean", run.replace(f".{backbone}.", ".nobackbone."),
                      run.rpartition(".s")[0], f"X.{run}", run.replace(".s0", ".seed0")):
            assert not pattern.fullmatch(wrong), wrong
