"""What a rule depends on beyond its data (issue 18): the code fingerprint comes from what its command
imports (the fused scan, cscan.py and the C file it compiles, is part of training; an unrelated module
is not), and weights files named in the config are inputs of the jobs that read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "dmlm.model.cli:register,_train"
EVALUATE = "dmlm.evaluation.cli:register,run"


@pytest.fixture
def package(tmp_path):
    """A copy of src/dmlm to edit."""
    return Path(shutil.copytree(ROOT / "src" / "dmlm", tmp_path / "src" / "dmlm",
                                ignore=shutil.ignore_patterns("__pycache__")))


@pytest.mark.parametrize("edited", ["model/cscan.py", "model/selective_scan.c", "model/train.py", "storage.py"])
def test_what_training_runs_changes_its_fingerprint(package, edited):
    from dmlm.codeversion import fingerprint

    before = fingerprint(TRAIN, root=package)
    with open(package / edited, "a") as f:
        f.write("\n// an edit\n" if edited.endswith(".c") else "\n# an edit\n")
    assert fingerprint(TRAIN, root=package) != before


def test_unrelated_modules_leave_training_alone(package):
    from dmlm.codeversion import code_files, fingerprint

    before = {e: fingerprint(e, root=package) for e in (TRAIN, EVALUATE, "dmlm.tokens.cli:register,_text_tokenizer")}
    # training and evaluation read token files and codebook sizes: editing or adding an encoder
    # (whose changed tokens are new inputs anyway) must not rerun runs whose tokens it leaves
    # byte-identical
    for name in ("report/plots.py", "corpus/build.py", "tokens/cli.py", "tokens/whisper.py", "tokens/lipreader.py"):
        with open(package / name, "a") as f:
            f.write("\n# an edit\n")
    (package / "tokens" / "newunits.py").write_text("def fit(settings, media):\n    raise NotImplementedError\n")
    registry = package / "tokens" / "registry.py"
    text = registry.read_text()
    registry.write_text(text.replace('"image": {', '"image": {"new_units": "dmlm.tokens.newunits", ', 1))
    assert registry.read_text() != text
    assert fingerprint(TRAIN, root=package) == before[TRAIN]
    assert fingerprint(EVALUATE, root=package) == before[EVALUATE]
    files = {str(p.relative_to(package)) for p in code_files((TRAIN,), package)}
    assert {"model/cscan.py", "model/selective_scan.c", "model/mamba_scan.py", "tokens/codebook.py"} <= files
    assert not files & {"report/plots.py", "evaluation/wer.py", "corpus/build.py", "tokens/cli.py",
                        "tokens/whisper.py", "tokens/lips.py", "tokens/lipreader.py", "tokens/craft.py",
                        "tokens/registry.py", "tokens/newunits.py"}
    # the text tokenizer runs tokens/text.py, not the neural tokenizers its package can dispatch to
    text = {str(p.relative_to(package)) for p in code_files(("dmlm.tokens.cli:register,_text_tokenizer",), package)}
    assert "tokens/text.py" in text and "tokens/whisper.py" not in text


def test_a_new_import_is_followed_through_the_cache(package, tmp_path):
    from dmlm.codeversion import code_files

    cache = tmp_path / "imports.json"
    assert package / "report/plots.py" not in code_files((TRAIN,), package, cache)
    assert cache.exists()
    with open(package / "model/objective.py", "a") as f:
        f.write("\n\ndef _late():\n    from dmlm.report import plots  # noqa: F401\n")
    assert package / "report/plots.py" in code_files((TRAIN,), package, cache)


def test_weights_named_in_the_config_are_inputs_of_the_jobs_that_read_them(tmp_path):
    """A pretrained backbone's files are inputs of its training; CRAFT weights of the codebook and the
    encodings: replacing one makes Snakemake plan those jobs (and what follows) again."""
    folder = tmp_path / "opt-pre"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    craft = tmp_path / "craft.pth"
    craft.write_bytes(b"weights")
    config = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
    config["backbones"]["opt-tiny"]["pretrained"] = str(folder)
    config["tokens"]["image"]["patches"] = {"encoder": "craft_kmeans", "n_units": 8, "fit_images": 8, "patch": 25,
                                            "weights": str(craft)}
    config["studies"]["tiny"]["modalities"] = ["A", "A+I"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    work.mkdir()
    # the config check would load these fake weights: mark it done, as a passed check leaves it
    from dmlm.validation_cache import fingerprint as config_fingerprint
    stamp = work / ".snakemake" / "dmlm-validated"
    stamp.mkdir(parents=True)
    (stamp / config_fingerprint(config)).touch()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", str(work), "--snakefile",
                           str(ROOT / "Snakefile"), "--configfile", str(tmp_path / "config.yaml"),
                           "--replace-workflow-config"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = {}
    for block in (proc.stdout + proc.stderr).split("\nrule ")[1:]:
        rule = block.split(":")[0]
        inputs = next((line for line in block.splitlines() if line.strip().startswith("input:")), "")
        jobs.setdefault(rule, []).append(inputs)
    assert jobs["train"] and all(str(folder / "model.safetensors") in i and str(folder / "config.json") in i
                                 for i in jobs["train"])
    with_craft = {r: sum(str(craft) in i for i in jobs.get(r, [])) for r in jobs}
    assert with_craft["fit_codebook"] == 1 and with_craft["encode_visual"] == 3  # the image codebook, 3 splits
    assert sum(with_craft.values()) == 4
