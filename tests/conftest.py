"""Shared fixtures: one end-to-end run of the tiny preset, reused by every workflow test."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# corpus settings of the stage tests: 4 speakers, 2 of them heard only in the test split
SMALL_CORPUS = {
    "dataset": "3eq",
    "image": {"width": 450, "height": 200},
    "speech": {
        "voices": ["en-us", "en"],
        "variants": ["m1", "f1"],
        "rate_wpm": 175,
        "rate_jitter": 0.1,
        "pitch_jitter": 15,
        "sample_rate": 16000,
        "test_speakers": 2,
    },
    "lips": {"fps": 25, "size": 88},
    "ocr": {"engine": "tesseract"},
    "seed": 1234,
}
TINY = ROOT / "presets" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the workflow copied into `workdir` with the tiny preset; fail loudly with its output."""
    # as the README writes it: `--configfile presets/tiny.yaml` alone replaces the default preset
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(workdir / "presets" / "tiny.yaml"),
           "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "results" / "logs").rglob("*.log"))[-5:]) \
            if (workdir / "results" / "logs").exists() else ""
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}\n{logs}")
    return proc


def planned_rules(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs a dry run plans, per rule (from the 'Job stats' table)."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M) if m.group(1) not in ("total", "all")}


def copy_workflow(dest: Path) -> Path:
    """The workflow files (not results) in a folder of their own, so tests may edit the sources."""
    for name in ("Snakefile", "workflow_config.yaml"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("rules", "presets", "profiles", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny preset run end to end once (a few minutes); tests read and dry-run on top of it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny"))
    snakemake(workdir, "-c", "2")
    return workdir


@pytest.fixture(scope="session", autouse=True)
def weights_records(tmp_path_factory):
    """Weights checksums recorded at first use (dmlm.checksums) go to a test folder, never to the
    repository's results/; Snakemake runs started by the tests inherit it."""
    import os

    from dmlm.checksums import RECORDS_ENV

    folder = tmp_path_factory.mktemp("weights-sha256")
    old = os.environ.get(RECORDS_ENV)
    os.environ[RECORDS_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(RECORDS_ENV, None)
    else:
        os.environ[RECORDS_ENV] = old


@pytest.fixture(scope="session")
def noise_bank(tmp_path_factory):
    """A small built-in noise bank (3 s a source), built once for the bank and mixing tests."""
    from dmlm.noise.bank import build_bank

    prefix = tmp_path_factory.mktemp("noise") / "builtin" / "noise"
    build_bank({"name": "builtin", "seconds_per_source": 3, "seed": 7}, prefix)
    return prefix


SMALL_CORPUS_SIZE = 50  # the acceptance tests of issue 3 run over (at least) 50 generated samples


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A generated test split of SMALL_CORPUS_SIZE utterances (SMALL_CORPUS settings), built once
    for the corpus and OCR tests."""
    from dmlm.corpus.build import build_split

    out = tmp_path_factory.mktemp("corpus") / "test"
    build_split(out, "test", SMALL_CORPUS_SIZE, SMALL_CORPUS, threads=2, progress=False)
    return out


VISUAL_TRAIN, VISUAL_TEST = 24, 12  # utterances of the visual tokenizer tests' corpus


def split_visemes(split: Path):
    """The renderer's viseme of every frame of a split's lip video (frame centre inside a phoneme
    event of its manifest; else silence), all utterances in a row."""
    import json

    import numpy as np

    from dmlm.storage import Ragged, read_table
    from dmlm.tokens.visemes import frame_visemes

    frames = Ragged.load(split / "lips")
    return np.concatenate([frame_visemes(json.loads(cell), int(frames.offsets[i + 1] - frames.offsets[i]), 25)
                           for i, cell in enumerate(read_table(split / "manifest.tsv")["phonemes"])])


@pytest.fixture(scope="session")
def visual_corpus(tmp_path_factory):
    """A train split (2 speakers) and a test split (the 2 others) for the image and lip tokenizer
    tests, built once."""
    from dmlm.corpus.build import build_split

    root = tmp_path_factory.mktemp("visual")
    build_split(root / "train", "train", VISUAL_TRAIN, SMALL_CORPUS, threads=1, progress=False)
    build_split(root / "test", "test", VISUAL_TEST, SMALL_CORPUS, threads=1, progress=False)
    return root


@pytest.fixture(scope="session")
def manifest(corpus):
    from dmlm.storage import read_table

    return read_table(corpus / "manifest.tsv")
