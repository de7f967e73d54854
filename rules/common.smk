# Shared helpers: config validation, the grid, paths, and the code fingerprint of each stage.
import hashlib
import re
import sys
import json
from pathlib import Path

from dmlm.config import validate_config
from dmlm.errors import DmlmError
from dmlm import grid
from dmlm.report.cli import OUTPUTS as REPORT_OUTPUTS

try:
    validate_config(config)
except DmlmError as err:
    raise WorkflowError(str(err)) from None

DATASET = config["corpus"]["dataset"]
EVALS = grid.evals_table(config)
RUNS = grid.runs_table(config)
PACKAGE = Path(workflow.basedir) / "src" / "dmlm"


wildcard_constraints:
    dataset=DATASET,
    split="train|val|test",
    cond=r"clean|snr-?\d+(@[a-z_]+)?|mix-[A-Za-z0-9_-]+",
    noisy_cond=r"snr-?\d+(@[a-z_]+)?|mix-[A-Za-z0-9_-]+",
    run="|".join(map(re.escape, RUNS["run"])) if len(RUNS) else "NONE",
    study="|".join(config["studies"]),
    modality="lips|image",
    field="transcript|ocr",
    textenc="|".join(map(re.escape, grid.text_encoders(config))),


def as_json(obj):
    """Params are passed to `dmlm` as one JSON string: Snakemake records it, so a change reruns."""
    return json.dumps(obj, sort_keys=True)


def code_version(*files):
    """Fingerprint of the package sources a rule runs (Snakemake does not track imported modules).

    Lists files relative to src/dmlm; storage.py (the file formats) is part of every stage."""
    digest = hashlib.sha256()
    for name in sorted({"storage.py", *files}):
        digest.update(name.encode())
        digest.update((PACKAGE / name).read_bytes())
    return digest.hexdigest()[:16]


def dmlm_cmd(command):
    """The CLI a rule runs, with the rule's settings and threads."""
    return f"{sys.executable} -m dmlm {command} --settings {{params.settings:q}} --threads {{threads}}"


def corpus_dir(split):
    return f"results/corpus/{DATASET}/{split}"


def ragged(prefix):
    return multiext(prefix, ".npy", ".offsets.npy")


def token_prefix(modality, split, cond="clean", encoder=None):
    """Token arrays of one modality; `encoder` is a named tokenizer of config['tokens'][modality],
    or for text (ocr, transcript) the text tokenizer's name (`local` or a pretrained backbone's)."""
    if modality == "audio":
        return f"results/tokens/{DATASET}/audio/{encoder}/{cond}/{split}"
    return f"results/tokens/{DATASET}/{modality}/{encoder}/{split}"


def text_tokenizer_path(textenc):
    return f"results/tokens/{DATASET}/text/{textenc}/tokenizer.json"


def run_text_tokenizer(run):
    """The text tokenizer a run reads (its backbone's own when pretrained, else the local one)."""
    return text_tokenizer_path(grid.run_text_encoder(config, run))


def run_streams(run, split, cond):
    """Token arrays a run reads for one split: its modalities (and the token times of those it
    interleaves, `<modality>.times`), then the transcript."""
    textenc = grid.run_text_encoder(config, run)
    encoders = {"ocr": textenc, "transcript": textenc, **grid.run_encoders(run)}
    streams = {}
    for name in [*grid.run_input_streams(run), "transcript"]:
        modality, _, times = name.partition(".")
        streams[name] = token_prefix(modality, split, cond, encoders.get(modality)) + (f".{times}" if times else "")
    return streams


def run_codebooks(run):
    """Codebook file of each discrete modality of a run (training reads their vocabulary sizes)."""
    return {
        modality: f"results/codebooks/{DATASET}/{modality}/{encoder}.npz"
        for modality, encoder in grid.run_encoders(run).items()
    }


def run_train_cond(run):
    return grid.train_cond(config, grid.parse_run_name(run)["train_noise"])


def stream_args(streams_by_split):
    return " ".join(
        f"--stream {split}:{name}={prefix}"
        for split, streams in streams_by_split.items()
        for name, prefix in streams.items()
    )


def all_reports():
    return expand(
        "results/report/{study}/{name}",
        study=list(config["studies"]),
        name=REPORT_OUTPUTS,
    )
