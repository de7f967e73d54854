"""scripts/publish_study.py on the tiny preset's finished run: the committed copy docs/results.md
cites holds every report table, the exact config, and the compute from the benchmark records."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, TINY

pytestmark = pytest.mark.slow


def publish(workdir, out, configfile=TINY):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "publish_study.py"), "--configfile", str(configfile),
                           "--workdir", str(workdir), "--out", str(out)], capture_output=True, text=True, timeout=300)


def test_publishes_tables_config_and_compute(tiny_run, tmp_path):
    proc = publish(tiny_run, tmp_path)
    assert proc.returncode == 0, proc.stderr
    dest = tmp_path / "tiny"
    for name in ("wer.csv", "rb.csv", "perceptual.csv", "speed.csv", "contrasts.csv", "summary.md", "rb.png"):
        assert (dest / "tiny" / name).stat().st_size > 0, name
    assert (dest / "config.yaml").read_bytes() == TINY.read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(dest / "tiny" / "wer.csv"),
                                  pd.read_csv(tiny_run / "results" / "report" / "tiny" / "wer.csv"))
    info = json.loads((dest / "provenance.json").read_text())
    assert info["studies"] == ["tiny"] and info["studies_missing"] == []
    compute = pd.read_csv(dest / "compute.csv").set_index("rule")
    assert compute.loc["train", "jobs"] == 2 and compute.loc["evaluate", "jobs"] == 4
    assert info["compute"]["job_hours"] > 0 and info["compute"]["wall_hours"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging folder left


def test_a_failed_publish_leaves_nothing_behind(tmp_path):
    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)  # no reports, no benchmark records
    proc = publish(empty, tmp_path / "out")
    assert proc.returncode != 0 and "no benchmark records" in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_a_study_without_its_report_is_listed_missing(tiny_run, tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text(TINY.read_text() + ("  later:\n    modalities: [A]\n    train_noise: [mix]\n    test_snrs: [clean]\n"
                                         "    backbone: [opt-tiny]\n    loss_weights: [paper]\n    seeds: 1\n"))
    proc = publish(tiny_run, tmp_path / "out", config)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "out" / "tiny" / "provenance.json").read_text())
    assert info["studies"] == ["tiny"] and info["studies_missing"] == ["later"]
    assert "missing: later" in proc.stdout
