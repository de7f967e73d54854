"""End to end through Snakemake on the tiny preset: outputs, and what a change reruns."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import planned_rules, snakemake

pytestmark = pytest.mark.slow

# the tiny runs' measured drops (A+O 1.70, A 1.76 nats, test_training_learned) and how far they
# end below a transcript unigram (A+O 0.55, A 0.61 nats), each less a margin for thread-count and
# platform differences in float arithmetic
RECIPE_FLOOR_NATS = 1.0
BELOW_UNIGRAM_NATS = 0.25


def test_dry_run_plans_every_stage(tmp_path):
    from conftest import copy_workflow

    workdir = copy_workflow(tmp_path)
    proc = snakemake(workdir, "-n")
    rules = planned_rules(proc)
    assert set(rules) >= {"corpus", "ocr", "noise_bank", "mix", "fit_codebook", "encode_audio",
                          "encode_text", "text_tokenizer", "train", "evaluate", "evaluate_permuted", "report"}
    # every job keeps a log and a benchmark record (a study's published compute sums the records)
    jobs = re.split(r"^(?:local)?rule (\w+):$", proc.stdout, flags=re.M)[1:]
    assert set(jobs[::2]) >= set(rules)
    for rule, block in zip(jobs[::2], jobs[1::2]):
        if rule != "all":
            assert re.search(r"^\s+log: results/logs/", block, re.M), rule
            assert re.search(r"^\s+benchmark: results/benchmarks/" + rule + "/", block, re.M), rule


def test_report_numbers_come_from_the_runs(tiny_run):
    config = yaml.safe_load((tiny_run / "presets" / "tiny.yaml").read_text())
    for study, spec in config["studies"].items():
        report = tiny_run / "results" / "report" / study
        wer = pd.read_csv(report / "wer.csv")
        assert len(wer) == len(spec["modalities"]) * len(spec["test_snrs"]) * spec["seeds"]
        for row in wer.itertuples():
            cond = "clean" if row.snr == "clean" else f"snr{row.snr}"
            result = json.loads((tiny_run / "results" / "runs" / row.run / "eval" / cond / "wer.json").read_text())
            assert row.wer == pytest.approx(result["wer"])
            hyps = pd.read_csv(tiny_run / "results" / "runs" / row.run / "eval" / cond / "hyps.tsv", sep="\t",
                               keep_default_na=False)
            assert len(hyps) == config["corpus"]["splits"]["test"]
        rb = pd.read_csv(report / "rb.csv")
        assert set(rb["modalities"]) == set(spec["modalities"]) - {"A"}
        assert {"rb", "delta_wer", "wer_audio"} <= set(rb.columns)
        assert (report / "summary.md").read_text().count("|") > 10
        for figure in ("rb.png", "wer_heatmap.png", "perceptual.png", "training.png", "contrasts.png"):
            assert (report / figure).stat().st_size > 10_000
        # perceptual scores: one row per extra modality of each multimodal run and test SNR, each
        # from its own permuted evaluation
        perceptual = pd.read_csv(report / "perceptual.csv")
        extra = sum(len(m.split("+")) - 1 for m in spec["modalities"])
        assert len(perceptual) == extra * len(spec["test_snrs"]) * spec["seeds"]
        for row in perceptual.itertuples():
            cond = "clean" if row.snr == "clean" else f"snr{row.snr}"
            permuted = json.loads((tiny_run / "results" / "runs" / row.run / "eval" / cond / f"perm-{row.permuted}"
                                   / "wer.json").read_text())
            assert row.wer_permuted == pytest.approx(permuted["wer"]) and permuted["permuted"] == row.permuted
            assert row.score == pytest.approx(permuted["wer"] - row.wer)
        speed = pd.read_csv(report / "speed.csv")
        assert len(speed) == len(wer) and (speed["utterances_per_s"] > 0).all() and (speed["tokens_per_s"] > 0).all()


def unigram_cross_entropy(train, val) -> float:
    """Cross-entropy (nats per token) on the val transcripts of the train split's token unigram,
    ``</s>`` included: what a model that ignores every input and every previous token can reach."""
    import numpy as np

    def tokens(ragged):
        return np.concatenate([np.append(np.asarray(x, dtype=np.int64), -1) for x in ragged])  # -1: </s>

    ids, counts = np.unique(tokens(train), return_counts=True)
    p = dict(zip(ids.tolist(), (counts / counts.sum()).tolist()))
    return float(-np.mean([np.log(p.get(t, 1e-6)) for t in tokens(val).tolist()]))


def test_training_learned(tiny_run):
    """A regression floor for the training recipe on the tiny preset: within its 30 steps every
    run's validation transcript loss falls by at least RECIPE_FLOOR_NATS and ends at least
    BELOW_UNIGRAM_NATS below a transcript unigram, so the model reads its context, not just the
    token frequencies. Measured (2026-12-01, digits split, wsd schedule): 4.72 -> 2.97 (A) and
    4.72 -> 3.02 (A+O) against a unigram of 3.57 (the tiny runs are too short to say more)."""
    from dmlm.storage import Ragged

    config = yaml.safe_load((tiny_run / "presets" / "tiny.yaml").read_text())
    text = tiny_run / "results" / "tokens" / config["corpus"]["dataset"] / "transcript" / "local"
    unigram = unigram_cross_entropy(Ragged.load(text / "train"), Ragged.load(text / "val"))
    logs = sorted((tiny_run / "results" / "runs").glob("*/train_log.tsv"))
    assert logs
    for log in logs:
        curve = pd.read_csv(log, sep="\t")
        assert curve["val_loss"].iloc[-1] < curve["val_loss"].iloc[0]
        losses = curve["val_transcript_loss"]
        assert losses.iloc[0] - losses.min() >= RECIPE_FLOOR_NATS, (log.parent.name, losses.tolist())
        assert losses.min() <= unigram - BELOW_UNIGRAM_NATS, (log.parent.name, losses.tolist(), unigram)


def test_rerun_after_finish_runs_nothing(tiny_run):
    assert planned_rules(snakemake(tiny_run, "-n")) == {}


def test_the_readme_form_plans_nothing_after_python_m_snakemake(tiny_run):
    """The fixture ran `python -m snakemake`; the README types `.venv/bin/snakemake`, whose shebang
    names `python3`. Rules spell the interpreter one way, so neither form reruns the other's jobs
    (a second spelling once counted as changed code in every rule)."""
    script = Path(sys.executable).parent / "snakemake"
    proc = subprocess.run([str(script), "-n", "--configfile", str(tiny_run / "presets" / "tiny.yaml")],
                          capture_output=True, text=True, timeout=600, cwd=tiny_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned_rules(proc) == {}


def test_a_rebuilt_but_identical_input_reruns_nothing_downstream(tiny_run):
    """A rule rerun by a code change whose outputs come out byte-identical (a refactor) must not
    rerun the jobs that read them: the workflow profile (profiles/default) makes Snakemake record
    checksums of inputs up to 512 MB, and the tiny noise bank (6.8 MB) is over Snakemake's 1 MB
    default. Simulated by giving the bank's files a new mtime and the same bytes."""
    import os

    bank = sorted((tiny_run / "results" / "noise").rglob("noise.*"))
    assert bank and max(f.stat().st_size for f in bank) > 1_000_000
    times = {f: (f.stat().st_atime, f.stat().st_mtime) for f in bank}
    try:
        for f in bank:
            os.utime(f)  # now: newer than every mix made from it
        assert planned_rules(snakemake(tiny_run, "-n")) == {}
        # the same check without the profile plans the mixes again: the test can fail
        assert "mix" in planned_rules(snakemake(tiny_run, "-n", "--workflow-profile", "none"))
    finally:
        for f, t in times.items():
            os.utime(f, t)


def test_changing_one_test_snr_reruns_only_what_depends_on_it(tiny_run, tmp_path):
    config = yaml.safe_load((tiny_run / "presets" / "tiny.yaml").read_text())
    config["studies"]["tiny"]["test_snrs"] = ["clean", -5]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    rules = planned_rules(snakemake(tiny_run, "-n", "--configfile", str(changed)))
    modalities = config["studies"]["tiny"]["modalities"]
    extra = sum(len(m.split("+")) - 1 for m in modalities)  # one permuted evaluation per extra modality
    assert rules == {"mix": 1, "encode_audio": 1, "evaluate": len(modalities), "evaluate_permuted": extra, "report": 1}


def test_editing_the_training_module_reruns_training_not_data(tiny_run):
    train_py = tiny_run / "src" / "dmlm" / "model" / "train.py"
    original = train_py.read_text()
    try:
        train_py.write_text(original + "\n# an edit\n")
        rules = planned_rules(snakemake(tiny_run, "-n"))
    finally:
        train_py.write_text(original)
    assert set(rules) == {"train", "evaluate", "evaluate_permuted", "report"}


def test_report_settings_rerun_only_what_reads_them(tiny_run, tmp_path):
    """The derangement seed reruns the permuted evaluations (and the report), not the plain ones;
    the bootstrap settings rerun only the report."""
    config = yaml.safe_load((tiny_run / "presets" / "tiny.yaml").read_text())
    n_permuted = sum(len(m.split("+")) - 1 for m in config["studies"]["tiny"]["modalities"]) * \
        len(config["studies"]["tiny"]["test_snrs"])
    seeded = {**config, "evaluation": {**config["evaluation"], "permutation_seed": 3}}
    (tmp_path / "seed.yaml").write_text(yaml.safe_dump(seeded))
    assert planned_rules(snakemake(tiny_run, "-n", "--configfile", str(tmp_path / "seed.yaml"))) == {
        "evaluate_permuted": n_permuted, "report": 1}
    (tmp_path / "boot.yaml").write_text(yaml.safe_dump({**config, "report": {"bootstrap_resamples": 500}}))
    assert planned_rules(snakemake(tiny_run, "-n", "--configfile", str(tmp_path / "boot.yaml"))) == {"report": 1}
