"""Issue 18, late errors: inputs that used to fail only after corpus and tokenizer jobs ran (or with a
numpy traceback) stop at start-up, or at the first read, with a message naming the key or file."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import ROOT, TINY
from dmlm.config import load_config, validate_config
from dmlm.errors import DmlmError
from dmlm.storage import Ragged, ragged_paths, save_ragged
from dmlm.validation_cache import validate_once


@pytest.fixture
def tiny():
    return yaml.safe_load(TINY.read_text())


def refused(config) -> str:
    with pytest.raises(DmlmError) as err:
        validate_config(config)
    return str(err.value)


# --------------------------------------------------------------- 1. a corrupt file in a noise bank

def musan(folder):
    """A MUSAN-style folder with one good WAV in a nested folder, as MUSAN has them."""
    wav = folder / "noise" / "free-sound" / "noise-0001.wav"
    wav.parent.mkdir(parents=True)
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    return wav


def test_a_corrupt_bank_file_is_named_at_startup(tiny, tmp_path):
    musan(tmp_path)
    tiny["noise"]["bank"] = {"name": "musan", "path": str(tmp_path)}
    validate_config(tiny)  # a readable bank passes
    bad = tmp_path / "music" / "song.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 4)
    message = refused(tiny)
    assert "noise.bank.path" in message and str(bad) in message


def test_the_validation_cache_notices_a_bank_file_corrupted_in_place(tiny, tmp_path):
    wav = musan(tmp_path / "bank")
    tiny["noise"]["bank"] = {"name": "musan", "path": str(tmp_path / "bank")}
    stamps = tmp_path / "stamps"
    assert validate_once(tiny, stamps) is True
    wav.write_bytes(b"not a wav file at all")  # rewritten in place: no folder changes
    with pytest.raises(DmlmError, match="noise-0001.wav"):
        validate_once(tiny, stamps)


# --------------------------------------------------------------- 2. a bad pretrained folder

def pretrained_folder(folder, config_text, weights=True):
    folder.mkdir()
    (folder / "config.json").write_text(config_text)
    (folder / "tokenizer.json").write_text("{}")
    if weights:
        (folder / "model.safetensors").write_bytes(b"\0")  # only its presence is checked
    return folder


OPT_CONFIG = json.dumps({"model_type": "opt", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "ffn_dim": 32, "max_position_embeddings": 64}, indent=1)


@pytest.mark.parametrize(
    "config_text, weights, expected",
    [
        ('{\n  "model_type": "opt",\n  "vocab_size": 50,,\n}', True, r"config\.json line 3"),
        (OPT_CONFIG, False, r"no weights file"),
        (OPT_CONFIG.replace('"opt"', '"gpt2"'), True, r"'gpt2' model, not one of family 'opt'"),
        ("[1, 2]", True, r"config\.json holds a JSON list"),
        (OPT_CONFIG.replace("16", '"big"'), True, r"transformers cannot load .*config\.json.*hidden_size"),
    ],
    ids=["corrupt-json", "no-weights", "another-family", "not-a-mapping", "transformers-refuses"],
)
def test_a_bad_pretrained_folder_is_named_at_startup(tiny, tmp_path, config_text, weights, expected):
    folder = pretrained_folder(tmp_path / "opt", config_text, weights)
    tiny["backbones"]["opt-tiny"]["pretrained"] = str(folder)
    message = refused(tiny)
    assert "backbones.opt-tiny.pretrained" in message
    assert __import__("re").search(expected, message), message


def test_a_good_pretrained_folder_passes(tiny, tmp_path):
    tiny["backbones"]["opt-tiny"]["pretrained"] = str(pretrained_folder(tmp_path / "opt", OPT_CONFIG))
    validate_config(tiny)


# --------------------------------------------------------------- 3. n_units larger than the fitting data

@pytest.mark.parametrize(
    "mutate, key, bound",
    [
        # 1 image, patch 100 on 450x200: 4 x 2 = 8 patches to fit on
        (lambda c: c["tokens"]["image"]["patches"].update(fit_images=1, patch=100, n_units=9),
         "tokens.image.patches.n_units", "8"),
        # fit_images above the train split: the split's 2 images give 2 x 8 patches
        (lambda c: (c["tokens"]["image"]["patches"].update(fit_images=48, patch=100, n_units=17),
                    c["corpus"]["splits"].update(train=2)), "tokens.image.patches.n_units", "16"),
        (lambda c: c["tokens"]["lips"]["pixels"].update(fit_frames=10, n_units=11), "tokens.lips.pixels.n_units", "10"),
    ],
    ids=["image-fit-images", "image-train-split", "lips-fit-frames"],
)
def test_n_units_above_the_fitting_rows_is_refused(tiny, mutate, key, bound):
    tiny["studies"]["tiny"]["modalities"] = ["A", "A+L", "A+I"]
    mutate(tiny)
    message = refused(tiny)
    assert key in message and f"at most {bound} " in message


def test_n_units_equal_to_the_fitting_rows_passes(tiny):
    tiny["studies"]["tiny"]["modalities"] = ["A", "A+L", "A+I"]
    tiny["tokens"]["image"]["patches"].update(fit_images=1, patch=100, n_units=8)
    tiny["tokens"]["lips"]["pixels"].update(fit_frames=10, n_units=10)
    validate_config(tiny)


# --------------------------------------------------------------- 4. too small splits

def test_a_one_utterance_test_split_is_refused_when_a_modality_is_permuted(tiny):
    tiny["corpus"]["splits"]["test"] = 1  # the tiny study has A+O: O is permuted for the perceptual score
    message = refused(tiny)
    assert "corpus.splits.test" in message and "at least 2" in message


def test_a_one_utterance_test_split_passes_without_perceptual_scores(tiny):
    tiny["corpus"]["splits"]["test"] = 1
    tiny["studies"]["tiny"]["modalities"] = ["A"]
    validate_config(tiny)


# --------------------------------------------------------------- 5. YAML syntax errors, empty files

def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncorpus:\n  splits: {train: 4\n  dataset: [1, 2\n")
    with pytest.raises(DmlmError, match=rf"{bad}: invalid YAML at line \d+"):
        load_config(bad)


def test_check_config_names_file_and_line(tmp_path, capsys):
    """Snakemake reads --configfile files itself and says only "not valid JSON or YAML";
    `dmlm check-config` names the file and line (README: Configuration)."""
    from dmlm.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: [1\n")
    assert main(["check-config", str(TINY), str(bad)]) == 2
    out = capsys.readouterr()
    assert f"{TINY}: valid (2 runs)" in out.out
    assert f"{bad}: invalid YAML at line 3" in out.err


def snakemake_cli(tmp_path, *args):
    """The `snakemake` command of this environment, as a user types it (the plugin that names
    config-file errors is installed with the project: src/snakemake_logger_plugin_dmlm)."""
    exe = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(exe), *args, "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile")],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("text, message", [
    ("name: x\nseed: [1\n", "{f}: invalid YAML at line 3, column 1"),
    ("name: x\ncorpus:\n  splits: {train: 4\n  dataset: 3eq\n", "{f}: invalid YAML at line 4, column 10"),
    ("", "{f} is empty"),
    ("# only a comment\n", "{f} is empty"),
    ("- A\n- A+O\n", "{f}: expected a mapping of config keys at the top level, got a list"),
], ids=["unclosed-list", "unclosed-mapping", "empty", "comment-only", "a-list"])
def test_snakemake_names_the_config_file_and_line(tmp_path, text, message):
    """Snakemake itself says only "Config file is not valid JSON or YAML" (snakemake#2439)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = snakemake_cli(tmp_path, "-n", "-c", "1", "--configfile", str(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Config file " + message.format(f=bad) in out, out


def test_a_target_after_configfile_is_named_as_a_missing_config_file(tmp_path):
    """`--configfile` takes one or more files, so a target typed after it is read as a config
    file; Snakemake itself printed only a FileNotFoundError traceback."""
    good = tmp_path / "good.yaml"
    good.write_text("name: x\n")
    proc = snakemake_cli(tmp_path, "-n", "-c", "1", "--configfile", str(good), "results/report/x/summary.md")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Config file results/report/x/summary.md: no such file" in out, out
    assert "put targets before --configfile" in out


def test_the_plugin_is_loaded_and_reads_valid_files_as_snakemake_does(tmp_path):
    """Snakemake discovers the installed plugin; through its wrapper a valid YAML or JSON config
    comes back exactly as Snakemake reads it, and file objects and schemas pass straight through."""
    import io

    from snakemake.common import configfile
    from snakemake_interface_common.exceptions import WorkflowError

    import snakemake_logger_plugin_dmlm  # noqa: F401  (what Snakemake's plugin registry imports)

    assert "--logger-dmlm-path" in snakemake_cli(tmp_path, "--help").stdout
    assert configfile._load_configfile._dmlm_wrapped
    assert configfile.load_configfile(str(TINY)) == yaml.safe_load(TINY.read_text())
    as_json = tmp_path / "tiny.json"
    as_json.write_text(json.dumps(yaml.safe_load(TINY.read_text())))
    assert configfile.load_configfile(str(as_json)) == yaml.safe_load(TINY.read_text())
    assert configfile._load_configfile(io.StringIO("a: 1\n")) == {"a": 1}
    bad_schema = tmp_path / "schema.yaml"
    bad_schema.write_text("type: [object\n")
    with pytest.raises(WorkflowError, match="^Schema file is not valid JSON or YAML"):
        configfile._load_configfile(str(bad_schema), filetype="Schema")


def test_a_valid_config_file_plans_as_before(tmp_path):
    proc = snakemake_cli(tmp_path, "-n", "-c", "1", "--configfile", str(TINY))
    assert proc.returncode == 0, proc.stderr
    assert "Job stats:" in proc.stdout + proc.stderr


def test_dmlm_logger_writes_json_lines(tmp_path):
    """A relative --logger-dmlm-path is where the command was typed (Snakemake makes the handler
    before it enters --directory): one file, every event in it."""
    launch = tmp_path / "launch"
    launch.mkdir()
    exe = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(exe), "-n", "-c", "1", "--configfile", str(TINY), "--logger", "dmlm",
                           "--logger-dmlm-path", "events.jsonl", "--directory", str(tmp_path),
                           "--snakefile", str(ROOT / "Snakefile")], cwd=launch, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "events.jsonl").exists()
    events = launch / "events.jsonl"
    entries = [json.loads(line) for line in events.read_text().splitlines()]
    assert {"time", "level", "event", "message"} <= set(entries[0])
    assert {e.get("rule_name") for e in entries} >= {"corpus", "train", "report"}


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comment-only"])
def test_an_empty_config_file_is_named(tmp_path, text):
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    with pytest.raises(DmlmError, match=rf"{empty} is empty"):
        load_config(empty)


def test_snakemake_with_an_empty_config_says_so(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(empty), "--replace-workflow-config",
         "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"the workflow config is empty (config files: {empty})" in out, out
    assert "required property" not in out


# --------------------------------------------------------------- 6. truncated token files

@pytest.fixture
def tokens(tmp_path):
    prefix = tmp_path / "train"
    save_ragged(prefix, [np.arange(n, dtype=np.int32) for n in (5, 3, 7)])
    return prefix


@pytest.mark.parametrize("which", [0, 1], ids=["data", "offsets"])
def test_a_truncated_token_file_is_named(tokens, which):
    path = ragged_paths(tokens)[which]
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DmlmError, match=rf"{path}: "):
        Ragged.load(tokens)


@pytest.mark.parametrize(
    "offsets, problem",
    [([1, 5, 8, 15], "start at 0"), ([0, 5, 3, 15], "decrease"), ([0, 5, 8, 12], "end at 15")],
    ids=["start", "monotonic", "end"],
)
def test_offsets_that_do_not_fit_the_data_are_named(tokens, offsets, problem):
    np.save(ragged_paths(tokens)[1], np.array(offsets, dtype=np.int64))
    with pytest.raises(DmlmError, match=rf"{ragged_paths(tokens)[1]}: .*{problem}"):
        Ragged.load(tokens)


# --------------------------------------------------------------- 7. training-noise SNRs

@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["noise"]["train_noise"]["mix"].update(snrs=[]), "noise.train_noise.mix.snrs"),
        (lambda c: c["noise"]["train_noise"]["mix"].update(snrs=[10, 0, 10]), "noise.train_noise.mix.snrs"),
        (lambda c: c["studies"]["tiny"].update(test_snrs=["clean", -10, -10]), "studies.tiny.test_snrs"),
    ],
    ids=["noisy-without-snrs", "duplicate-snrs", "duplicate-test-snrs"],
)
def test_train_noise_snrs(tiny, mutate, key):
    mutate(tiny)
    assert key in refused(tiny)


def test_a_clean_recipe_may_have_no_snrs(tiny):
    tiny["noise"]["train_noise"]["clean"] = {"fraction_noisy": 0, "snrs": []}
    validate_config(copy.deepcopy(tiny))
