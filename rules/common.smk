# Shared helpers: config validation, the grid, paths, and the code fingerprint of each stage.
import functools
import re
import sys
import json
from pathlib import Path

from dmlm.config import require_config
from dmlm.checksums import weights_files
from dmlm.codeversion import fingerprint
from dmlm.validation_cache import validate_once
from dmlm.errors import DmlmError
from dmlm.owners import claim_outputs
from dmlm import grid
from dmlm.report.cli import OUTPUTS as REPORT_OUTPUTS

# Validated by the Snakemake the user started (a cluster job's own Snakemake gets the same config),
# and only when the config or what its checks read changed: the reference checks read encoder
# weights (MD5s; a weights file named in the config is loaded: seconds) (dmlm/validation_cache.py).
# Then its output folders are checked against results/owners.json: a folder another preset made
# with other settings is refused, naming the key to rename (a run, not a dry run, records them at
# its start: on_start below).
try:
    if workflow.is_main_process:
        # --configfile files (Snakemake has loaded them: a YAML syntax error stops it before this)
        require_config(config, workflow.overwrite_configfiles or workflow.configfiles)
        validate_once(config, Path(".snakemake") / "dmlm-validated")
        claim_outputs(config, "results", record=False)
except DmlmError as err:
    raise WorkflowError(str(err)) from None

DATASET = config["corpus"]["dataset"]
EVALS = grid.evals_table(config)
RUNS = grid.runs_table(config)
PACKAGE = Path(workflow.basedir) / "src" / "dmlm"
CODE_CACHE = Path(".snakemake") / "dmlm-code-imports.json"  # what each module imports (by mtime)


wildcard_constraints:
    dataset=DATASET,
    split="train|val|test",
    cond=r"clean|snr-?\d+(@[a-z_]+)?|mix-[A-Za-z0-9_-]+",
    noisy_cond=r"snr-?\d+(@[a-z_]+)?|mix-[A-Za-z0-9_-]+",
    run=grid.run_pattern(config) if len(RUNS) else "NONE",
    study="|".join(config["studies"]),
    modality="lips|image",
    field="transcript|ocr",
    textenc="|".join(map(re.escape, grid.text_encoders(config))),


def as_json(obj):
    """Params are passed to `dmlm` as one JSON string: Snakemake records it, so a change reruns."""
    return json.dumps(obj, sort_keys=True)


def code_version(stage, handler):
    """Fingerprint of the package code `dmlm <command>` runs (Snakemake does not track imported
    modules): the stage's CLI module (`register` and the command's `handler`) and every dmlm module
    and data file (e.g. model/selective_scan.c) they import, transitively (dmlm/codeversion.py)."""
    return fingerprint(f"dmlm.{stage}.cli:register,{handler}", root=PACKAGE, cache=CODE_CACHE)


@functools.cache
def weights_inputs(path):
    """The files of a weights path named in the config (a file, or every file of a folder), as
    inputs of the rules that read them: replacing one reruns those jobs and what follows."""
    return [str(p) for p in weights_files(path)] if path else []


def dmlm_cmd(command):
    """The CLI a rule runs, with the rule's settings and threads."""
    return f"{sys.executable} -m dmlm {command} --settings {{params.settings:q}} --threads {{threads}}"


def corpus_dir(split):
    return f"results/corpus/{DATASET}/{split}"


def ragged(prefix):
    return multiext(prefix, ".npy", ".offsets.npy")


def ragged_files(prefix):
    """The files of a ragged array, for input functions (plain paths: multiext's flags are for
    declaring outputs, and cost time at thousands of calls)."""
    return [f"{prefix}.npy", f"{prefix}.offsets.npy"]


def token_prefix(modality, split, cond="clean", encoder=None):
    """Token arrays of one modality; `encoder` is a named tokenizer of config['tokens'][modality],
    or for text (ocr, transcript) the text tokenizer's name (`local` or a pretrained backbone's)."""
    if modality == "audio":
        return f"results/tokens/{DATASET}/audio/{encoder}/{cond}/{split}"
    return f"results/tokens/{DATASET}/{modality}/{encoder}/{split}"


def text_tokenizer_path(textenc):
    return f"results/tokens/{DATASET}/text/{textenc}/tokenizer.json"


# The run helpers below depend on the run name (and the fixed config) only, and are asked once per
# job at plan time: cached. Callers must not modify what they return.
@functools.cache
def run_text_tokenizer(run):
    """The text tokenizer a run reads (its backbone's own when pretrained, else the local one)."""
    return text_tokenizer_path(grid.run_text_encoder(config, run))


@functools.cache
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


@functools.cache
def run_codebooks(run):
    """Codebook file of each discrete modality of a run (training reads their vocabulary sizes)."""
    return {
        modality: f"results/codebooks/{DATASET}/{modality}/{encoder}.npz"
        for modality, encoder in grid.run_encoders(run).items()
    }


@functools.cache
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


# Which ready job runs first when cores are short (Snakemake's `priority:`, higher first): data
# preparation (short jobs on the way to every training job), then training (the long jobs), then
# evaluations and reports (priority 0). Snakemake starts the set of ready jobs with the largest
# summed priority that fits the free cores, so a 2-thread preparation job must outweigh two
# 1-thread ones (5 > 2 + 2); otherwise it waits until both cores are free at once, which, once
# training runs, is the end. Measured on the default preset: with equal priorities the lip codebook
# waited for three runs' evaluations; with 2-thread jobs at priority 2 it waited for the other
# three runs' training. Either way A+L trained last and alone (over 45 minutes instead of 39).
PRIORITY_PREPARE_WIDE, PRIORITY_PREPARE, PRIORITY_TRAIN = 5, 2, 1


# ==================================================================================================
# Cluster resources and Slurm checks (issue 7: Slurm profile). Kept apart from the grid helpers.
# Every rule asks `**requests(rule, mem_mb=..., runtime=...)` with its measured values; a preset's
# `cluster.resources.<rule>` replaces them at cluster scale. Each retry (attempt n) asks for n times
# the memory and time, so a job Slurm ended with TIMEOUT or OUT_OF_MEMORY gets more the next time.
# `slurm_extra` carries `--deadline`: a job not started within `cluster.max_queue_minutes` is
# cancelled by Slurm (state DEADLINE), which ends the run with an error instead of a silent wait.
# ==================================================================================================
import subprocess

CLUSTER = config.get("cluster", {})
MAX_QUEUE_MINUTES = CLUSTER.get("max_queue_minutes", 2880)
NEURAL_ENCODERS = {"whisper_kmeans", "craft_kmeans"}  # tokenizers that run a network (CUDA if present)


def requests(rule, mem_mb, runtime, gpu=0):
    """Resources of `rule`: attempt-scaled mem_mb and runtime (minutes), GPUs, and the deadline.

    `gpu` is a count or "encoder" (1 for a job whose tokenizer is in NEURAL_ENCODERS, else 0)."""
    chosen = CLUSTER.get("resources", {}).get(rule, {})
    mem, minutes = chosen.get("mem_mb", mem_mb), chosen.get("runtime", runtime)
    gpus = chosen.get("gpu", encoder_gpus if gpu == "encoder" else gpu)
    return dict(
        mem_mb=lambda wildcards, attempt: mem * attempt,
        runtime=lambda wildcards, attempt: minutes * attempt,
        gpu=gpus,
        slurm_extra=lambda wildcards, attempt: f"--deadline=now+{MAX_QUEUE_MINUTES + minutes * attempt}minutes",
    )


def encoder_gpus(wildcards):
    """1 for a codebook or encoding job whose tokenizer runs a network (Whisper, CRAFT), else 0."""
    kind = wildcards.get("kind") or wildcards.get("modality") or "audio"
    return int(config["tokens"][kind][wildcards.encoder]["encoder"] in NEURAL_ENCODERS)


def check_slurm_status_setup(log=None):
    """Refuse to start a Slurm run whose status checks would never see a job end.

    The Slurm executor asks `sacct` (default) or `squeue` for job states. Without accounting
    (AccountingStorageType=accounting_storage/none) `sacct` fails, the executor drops the jobs from
    its watch list and Snakemake waits forever without a message. It also switches from `squeue`
    to `sacct` when MinJobAge < 3 x slurm-init-seconds-before-status-checks. Both are checked here,
    from `scontrol show config`, before any job is submitted."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    settings = workflow.executor_settings
    try:
        shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WorkflowError(f"Slurm profile: `scontrol show config` failed ({err}); is Slurm reachable?")
    if shown.returncode != 0:
        raise WorkflowError(f"Slurm profile: `scontrol show config` failed: {shown.stderr.strip()}")
    conf = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", shown.stdout, re.M))
    accounting = conf.get("AccountingStorageType", "") not in ("", "accounting_storage/none", "(null)")
    min_job_age = int(re.match(r"\d*", conf.get("MinJobAge", "")).group() or 0)
    command = settings.status_command
    if command == "squeue" and min_job_age < 3 * settings.init_seconds_before_status_checks:
        command = "sacct"  # what the executor will do
    if command == "sacct" and not accounting:
        raise WorkflowError(
            "Slurm profile: this cluster has no accounting (AccountingStorageType=accounting_storage/none), "
            f"so job states can only come from squeue, but the executor would use sacct (status command "
            f"{settings.status_command!r}, MinJobAge={min_job_age} s, slurm-init-seconds-before-status-checks="
            f"{settings.init_seconds_before_status_checks}). Set slurm-status-command: squeue and keep "
            "MinJobAge >= 3 x slurm-init-seconds-before-status-checks (and >= 200 s), or enable slurmdbd."
        )
    if command == "squeue" and min_job_age < 200:
        raise WorkflowError(
            f"Slurm profile: MinJobAge={min_job_age} s: squeue forgets finished jobs before the executor's "
            "status checks (up to 180 s apart) see them; ask for MinJobAge >= 300 or use sacct with slurmdbd."
        )


def on_start(log=None):
    """Snakemake keeps one onstart handler: the Slurm checks, then this preset's claim on its outputs."""
    check_slurm_status_setup(log)
    if workflow.is_main_process:
        claim_outputs(config, "results")


workflow.onstart(on_start)
