"""Presets: `--configfile <preset>` plans exactly that preset (not a merge with the default one), and
two presets never write one output path with different content."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import copy_workflow


def dry_run(workdir, *args) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--directory", str(workdir),
           "--snakefile", str(workdir / "Snakefile"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=workdir)  # config paths: in the copy
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned_commands(workdir, *args) -> list[str]:
    """The shell commands of a dry run of the workflow copied into `workdir`, sorted."""
    return sorted(re.findall(r"^Shell command: (.*)$", dry_run(workdir, *args), re.M))


def planned_writes(workdir, *args) -> dict[str, str]:
    """Every path a dry run plans to write (outputs, logs, benchmarks) -> the command writing it."""
    writes = {}
    for job in dry_run(workdir, *args).split("\n\n"):
        command = re.search(r"^Shell command: (.*)$", job, re.M)
        for paths in re.findall(r"^    (?:output|log|benchmark): (.*)$", job, re.M):
            writes.update(dict.fromkeys(paths.split(", "), command and command.group(1)))
    return writes


def settings_of(commands, command) -> list[dict]:
    """The --settings JSON of every planned `dmlm <command>`."""
    return [json.loads(m.group(1)) for c in commands
            if (m := re.search(rf"-m dmlm {command} --settings '(.*?)' ", c))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    # a copy holding workflow_config.yaml beside the Snakefile, as the repository does: Snakemake
    # only merges the default preset in where it finds it
    return copy_workflow(tmp_path_factory.mktemp("presets"))


def test_configfile_alone_plans_exactly_the_preset(workdir):
    tiny = yaml.safe_load((workdir / "presets" / "tiny.yaml").read_text())
    alone = planned_commands(workdir, "--configfile", "presets/tiny.yaml")
    assert alone == planned_commands(workdir, "--configfile", "presets/tiny.yaml", "--replace-workflow-config")
    # the default preset's training keys (early stopping, device, ...) are not merged in
    trainings = settings_of(alone, "train")
    assert trainings and all(s["training"] == tiny["training"] for s in trainings)


def test_config_overrides_apply_on_top_of_either_preset(workdir):
    tiny = planned_commands(workdir, "--configfile", "presets/tiny.yaml", "--config", "seed=99")
    assert {s["seed"] for s in settings_of(tiny, "corpus")} == {99}
    assert all("results/corpus/3eq-tiny/" in c for c in tiny if " dmlm corpus " in c)
    default = planned_commands(workdir, "--config", "seed=99")  # no --configfile: the default preset
    assert {s["seed"] for s in settings_of(default, "corpus")} == {99}
    assert all("results/corpus/3eq/" in c for c in default if " dmlm corpus " in c)


@pytest.mark.slow
def test_paper_preset_alone_is_the_paper_grid(workdir):
    """The paper grid (thousands of jobs: about 25 s per dry run on 2 cores)."""
    alone = planned_commands(workdir, "--configfile", "presets/paper.yaml")
    assert alone == planned_commands(workdir, "--configfile", "presets/paper.yaml", "--replace-workflow-config")


def assert_no_clash(workdir, first: str, second: str):
    """Each path both presets write is written by the same command (same settings, same content)."""
    a = planned_writes(workdir, "--configfile", first)
    b = planned_writes(workdir, "--configfile", second)
    assert a and b
    clashes = sorted(p for p in set(a) & set(b) if a[p] != b[p])
    assert not clashes, clashes[:10]


def test_default_and_tiny_presets_write_no_path_with_other_content(workdir):
    assert_no_clash(workdir, "workflow_config.yaml", "presets/tiny.yaml")


@pytest.mark.slow
def test_default_and_paper_presets_write_no_path_with_other_content(workdir):
    assert_no_clash(workdir, "workflow_config.yaml", "presets/paper.yaml")


@pytest.mark.slow
def test_default_and_study_presets_write_no_path_with_other_content(workdir):
    """The CPU study shares the default's noise bank (same settings) and nothing else it writes:
    its runs and reports have names of their own."""
    assert_no_clash(workdir, "workflow_config.yaml", "presets/study.yaml")


def test_a_preset_is_refused_another_presets_folder(tmp_path):
    """After a run of the default preset, a preset that names the default's bank `builtin` with
    other settings stops at start-up naming the folder and the key; an edit of the default preset
    itself and the shipped tiny preset plan as usual."""
    workdir = copy_workflow(tmp_path)
    default = yaml.safe_load((workdir / "workflow_config.yaml").read_text())
    dry_run(workdir)
    assert not (workdir / "results" / "owners.json").exists()  # a dry run claims nothing
    # a run of the default preset (--touch: the run's start, without its jobs) records its claims
    subprocess.run([sys.executable, "-m", "snakemake", "-c1", "--touch", "--directory", str(workdir),
                    "--snakefile", str(workdir / "Snakefile")], check=True, capture_output=True, timeout=600)
    other = {**default, "name": "longer-noise", "noise": {**default["noise"], "bank": {"name": "builtin", "seconds_per_source": 60}}}
    (workdir / "other.yaml").write_text(yaml.safe_dump(other))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--directory", str(workdir), "--snakefile",
           str(workdir / "Snakefile"), "--configfile", "other.yaml"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=workdir)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "results/noise/builtin holds the outputs of preset 'default'" in message
    assert "seconds_per_source" in message and "config key noise.bank.name" in message
    (workdir / "edited.yaml").write_text(yaml.safe_dump({**other, "name": "default"}))
    assert planned_commands(workdir, "--configfile", "edited.yaml")
    assert planned_commands(workdir, "--configfile", "presets/tiny.yaml")


def test_a_builtin_bank_of_another_name_is_built(tmp_path):
    """Presets name their built-in banks apart (`builtin-tiny`, `builtin-paper`); the CLI builds them."""
    settings = {"name": "builtin-tiny", "seconds_per_source": 0.5, "seed": 1, "recordings": False,
                "babble_sources": 0, "music_sources": 0}
    proc = subprocess.run([sys.executable, "-m", "dmlm", "noise-bank", "--settings", json.dumps(settings),
                           "--threads", "1", "--out-prefix", str(tmp_path / "noise")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((tmp_path / "noise.tsv").read_text().splitlines()) > 1
