# Training: one DMLM per run. Resumable state lives in results/runs/{run}/state/, which is not a
# declared output, so Snakemake does not delete it before a retry.

def train_streams(wildcards):
    cond = run_train_cond(wildcards.run)
    return {split: run_streams(wildcards.run, split, cond) for split in ("train", "val")}


def train_settings(wildcards):
    return as_json(grid.run_settings(config, wildcards.run))


def train_stream_args(wildcards):
    return stream_args(train_streams(wildcards))


def train_codebooks(wildcards):
    return list(run_codebooks(wildcards.run).values())


def train_codebook_args(wildcards):
    return " ".join(f"--codebook {m}={path}" for m, path in run_codebooks(wildcards.run).items())


def train_weights(wildcards):
    """A pretrained backbone's folder: its weights are what training starts from."""
    backbone = config["backbones"][grid.parse_run_name(wildcards.run)["backbone"]]
    return weights_inputs(backbone.get("pretrained"))


def train_inputs(wildcards):
    prefixes = [p for streams in train_streams(wildcards).values() for p in streams.values()]
    return [f for prefix in prefixes for f in ragged_files(prefix)]


rule train:
    input:
        tokens=train_inputs,
        codebooks=train_codebooks,
        tokenizer=lambda wildcards: run_text_tokenizer(wildcards.run),
        weights=train_weights,
    output:
        checkpoint="results/runs/{run}/checkpoint.pt",
        checksum="results/runs/{run}/checkpoint.pt.sha256",  # checked before every load
        log="results/runs/{run}/train_log.tsv",
    params:
        settings=train_settings,
        streams=train_stream_args,
        codebooks=train_codebook_args,
        code=code_version("model", "_train"),
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    priority: PRIORITY_TRAIN
    threads: rule_threads("train", 1)
    resources:
        **requests("train", mem_mb=3000, runtime=60, gpu=1),
    shell:
        dmlm_cmd("train") + " {params.streams} {params.codebooks} --tokenizer {input.tokenizer}"
        " --out-dir results/runs/{wildcards.run} > {log} 2>&1"
