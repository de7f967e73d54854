"""scripts/recipe_experiment.py, the tool every recipe choice is made with (docs/recipe-log.md), on
the tiny preset's finished run: a workflow run's model evaluated on the validation split."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
A_O_RUN = "A+O.mfcc.mix.opt-tiny.paper.s0"


def experiment(workdir: Path, out: str, *args: str) -> subprocess.CompletedProcess:
    scripts = workdir / "scripts"
    scripts.mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "recipe_experiment.py", scripts / "recipe_experiment.py")
    return subprocess.run([sys.executable, str(scripts / "recipe_experiment.py"), str(workdir / "exp" / out),
                           "--configfile", str(workdir / "presets" / "tiny.yaml"), *args],
                          capture_output=True, text=True, timeout=900, cwd=workdir)


@pytest.mark.slow
def test_a_workflow_run_is_evaluated_on_validation(tiny_run):
    """The validation tokens at the test SNRs are not part of a workflow run: the script has
    Snakemake make them (its targets once went after --configfile and were read as config files),
    then adopts the run's model and evaluates it on validation, never on test."""
    proc = experiment(tiny_run, "a-o", "--modalities", "A+O", "--trained-run", f"results/runs/{A_O_RUN}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tiny_run / "exp" / "a-o"
    result = json.loads((out / "result.json").read_text())
    assert result["split"] == "val" and result["trained_run"] == f"results/runs/{A_O_RUN}"
    assert set(result["wer"]) == {"clean", "snr-10"}
    assert set(result["perceptual"]["ocr"]) == {"clean", "snr-10"}
    assert (tiny_run / "results" / "tokens" / "3eq-tiny" / "audio" / "mfcc" / "snr-10" / "val.npy").exists()
    assert (out / "run" / "checkpoint.pt").read_bytes() == (tiny_run / "results" / "runs" / A_O_RUN / "checkpoint.pt").read_bytes()
    hyps = (out / "eval-val" / "clean" / "hyps.tsv").read_text().splitlines()
    val = (tiny_run / "results" / "corpus" / "3eq-tiny" / "val" / "manifest.tsv").read_text().splitlines()[1:]
    assert {h.split("\t")[0] for h in hyps[1:]} == {row.split("\t")[0] for row in val}


@pytest.mark.slow
def test_a_run_trained_with_other_settings_is_refused(tiny_run):
    proc = experiment(tiny_run, "a-o-lr", "--modalities", "A+O", "--set", "training.lr=0.5",
                      "--trained-run", f"results/runs/{A_O_RUN}")
    assert proc.returncode != 0
    assert "trained with other settings (training differ)" in proc.stdout + proc.stderr
    assert not (tiny_run / "exp" / "a-o-lr" / "run" / "checkpoint.pt").exists()
