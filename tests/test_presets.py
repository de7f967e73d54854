"""Presets: `--configfile <preset>` plans exactly that preset (not a merge with the default one)."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import copy_workflow


def planned_commands(workdir, *args) -> list[str]:
    """The shell commands of a dry run of the workflow copied into `workdir`, sorted."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--directory", str(workdir),
           "--snakefile", str(workdir / "Snakefile"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(re.findall(r"^Shell command: (.*)$", proc.stdout + proc.stderr, re.M))


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
