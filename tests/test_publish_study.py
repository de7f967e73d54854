"""scripts/publish_study.py on the tiny preset's finished run: the committed copy docs/results.md
cites holds every report table, the exact config, and the compute from the benchmark records."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, TINY

pytestmark = pytest.mark.slow


def publish(workdir, out, configfile=TINY, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "publish_study.py"), "--configfile", str(configfile),
                           "--workdir", str(workdir), "--out", str(out), *args], capture_output=True, text=True, timeout=300)


def test_publishes_tables_config_and_compute(tiny_run, tmp_path):
    # a benchmark record of a job outside the study (another study's run in a shared workdir)
    # must not count in its compute
    stray = tiny_run / "results" / "benchmarks" / "train" / "A.mfcc.mix.opt-tiny.paper.s99.tsv"
    stray.write_text(next((tiny_run / "results" / "benchmarks" / "train").glob("*.tsv")).read_text())
    try:
        proc = publish(tiny_run, tmp_path)
    finally:
        stray.unlink()
    assert proc.returncode == 0, proc.stderr
    dest = tmp_path / "tiny" / "tiny"
    for name in ("wer.csv", "rb.csv", "perceptual.csv", "speed.csv", "contrasts.csv", "summary.md", "rb.png"):
        assert (dest / name).stat().st_size > 0, name
    assert (dest / "config.yaml").read_bytes() == TINY.read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(dest / "wer.csv"),
                                  pd.read_csv(tiny_run / "results" / "report" / "tiny" / "wer.csv"))
    info = json.loads((dest / "provenance.json").read_text())
    compute = pd.read_csv(dest / "compute.csv").set_index("rule")
    assert compute.loc["train", "jobs"] == 2 and compute.loc["evaluate", "jobs"] == 4
    assert info["compute"]["job_hours"] > 0 and info["compute"]["wall_hours"] > 0
    assert info["compute"]["jobs"] == compute["jobs"].sum() and info["compute"]["jobs_without_record"] == 0
    # the fixture's one invocation ran every job of the study and nothing else
    [run] = info["compute"]["invocations"]
    assert run["jobs_of_study"] == run["jobs"] == info["compute"]["jobs"]
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["tiny"]  # no staging folder left


def test_a_workdir_without_a_finished_report_publishes_nothing(tmp_path):
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    proc = publish(empty, tmp_path / "out")
    assert proc.returncode != 0 and "no finished report of a study" in proc.stderr and "tiny" in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_an_unknown_study_is_named(tmp_path):
    proc = publish(tmp_path, tmp_path / "out", TINY, "--study", "tiny", "--study", "nope")
    assert proc.returncode != 0 and "--study nope: not a study of" in proc.stderr


def test_a_study_published_earlier_is_kept_and_one_never_run_is_missing(tiny_run, tmp_path):
    """A preset published study by study, one machine session each: publishing the next study
    leaves the earlier ones as they were."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.read_text() + "".join(
        f"  {name}:\n    modalities: [A]\n    train_noise: [mix]\n    test_snrs: [clean]\n"
        "    backbone: [opt-tiny]\n    loss_weights: [paper]\n    seeds: 1\n" for name in ("earlier", "later")))
    earlier = tmp_path / "out" / "tiny" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "provenance.json").write_text('{"published": "by an earlier session"}')
    proc = publish(tiny_run, tmp_path / "out", config, "--study", "tiny", "--study", "later")
    assert proc.returncode == 0, proc.stderr
    assert "published: tiny (" in proc.stdout and "kept as published before: earlier; missing: later" in proc.stdout
    assert (earlier / "provenance.json").read_text() == '{"published": "by an earlier session"}'
    assert sorted(p.name for p in (tmp_path / "out" / "tiny").iterdir()) == ["earlier", "tiny"]


def test_a_resumed_training_counts_every_attempt(tiny_run, tmp_path):
    # the benchmark record times the last attempt; train_log.tsv's elapsed_s sums all of them
    log = next((tiny_run / "results" / "runs").glob("A.*/train_log.tsv"))
    kept, stat = log.read_text(), log.stat()
    rows = pd.read_csv(log, sep="\t")
    rows.loc[rows.index[-1], "elapsed_s"] = 7200.0  # two hours of earlier attempts
    try:
        rows.to_csv(log, sep="\t", index=False)
        proc = publish(tiny_run, tmp_path)
    finally:  # as it was, mtime included: the shared fixture's workflow must stay up to date
        log.write_text(kept)
        os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert proc.returncode == 0, proc.stderr
    train = pd.read_csv(tmp_path / "tiny" / "tiny" / "compute.csv").set_index("rule").loc["train", "job_hours"]
    assert 2.0 < train < 2.1  # the two-hour run and the other, seconds


def test_an_adopted_training_counts_its_logged_time(tiny_run, tmp_path):
    # a model trained outside the workflow and adopted into it has no benchmark record: its
    # train_log.tsv's training time counts, and the totals say one training was adopted
    record = next((tiny_run / "results" / "benchmarks" / "train").glob("A.*.tsv"))
    aside = tmp_path / "record.tsv"
    record.rename(aside)
    try:
        proc = publish(tiny_run, tmp_path / "out")
    finally:
        aside.rename(record)
    assert proc.returncode == 0, proc.stderr
    logged = pd.read_csv(tiny_run / "results" / "runs" / record.stem / "train_log.tsv", sep="\t")["elapsed_s"].iloc[-1]
    others = pd.read_csv(next(p for p in (tiny_run / "results" / "benchmarks" / "train").glob("*.tsv") if p != record),
                         sep="\t")["s"].iloc[-1]
    compute = pd.read_csv(tmp_path / "out" / "tiny" / "tiny" / "compute.csv").set_index("rule")
    assert compute.loc["train", "jobs"] == 2
    assert compute.loc["train", "job_hours"] == pytest.approx((logged + others) / 3600, abs=1e-3)
    totals = json.loads((tmp_path / "out" / "tiny" / "tiny" / "provenance.json").read_text())["compute"]
    assert totals["trainings_adopted"] == 1 and totals["jobs_without_record"] == 0
    assert "1 trainings adopted" in proc.stdout
