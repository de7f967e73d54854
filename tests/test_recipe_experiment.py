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
    # the table the recipe log's rows and decisions are printed with
    table = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_table.py"), str(out)],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    overall = sum(result["wer"].values()) / 2
    assert f"mean val WER over the 2 conditions and 1 runs: {overall:.2f}" in table
    assert f"| a-o | A+O | s0 | - | {result['best_val_transcript_loss']:.2f} |" in table


@pytest.mark.slow
def test_prepare_only_makes_the_token_files_and_trains_nothing(tiny_run):
    """Experiments started side by side must not run Snakemake on the same files at once: one
    `--prepare-only` call makes them first."""
    tokens = tiny_run / "results" / "tokens" / "3eq-tiny" / "audio" / "mfcc" / "snr-10" / "val.npy"
    tokens.unlink(missing_ok=True)
    proc = experiment(tiny_run, "prep", "--modalities", "A+O", "--prepare-only", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "token files for A+O are ready" in proc.stdout
    assert tokens.exists()
    out = tiny_run / "exp" / "prep"
    assert not (out / "run").exists() and not (out / "result.json").exists() and not (out / "tokenizer.json").exists()
    assert not (out / "experiment.json").exists()  # the folder can still hold any experiment


@pytest.mark.slow
def test_a_run_trained_with_other_settings_is_refused(tiny_run):
    proc = experiment(tiny_run, "a-o-lr", "--modalities", "A+O", "--set", "training.lr=0.5",
                      "--trained-run", f"results/runs/{A_O_RUN}")
    assert proc.returncode != 0
    assert "trained with other settings (training differ)" in proc.stdout + proc.stderr
    assert not (tiny_run / "exp" / "a-o-lr" / "run" / "checkpoint.pt").exists()
