# Evaluation: greedy decoding of the test split at one test condition; WER with jiwer.
# evaluate_permuted: the same with one extra modality permuted across the test items (perceptual score).

from dmlm.report.settings import permutation_seed

# the plain evaluation does not read the permutation seed: changing it reruns only permuted ones
EVAL_SETTINGS = {k: v for k, v in config["evaluation"].items() if k != "permutation_seed"}


def eval_streams(wildcards):
    return run_streams(wildcards.run, "test", wildcards.cond)


def eval_stream_args(wildcards):
    return " ".join(f"--stream {name}={prefix}" for name, prefix in eval_streams(wildcards).items())


def eval_inputs(wildcards):
    return [f for prefix in eval_streams(wildcards).values() for f in ragged_files(prefix)]


rule evaluate:
    input:
        checkpoint="results/runs/{run}/checkpoint.pt",
        checksum="results/runs/{run}/checkpoint.pt.sha256",
        tokens=eval_inputs,
        tokenizer=lambda wildcards: run_text_tokenizer(wildcards.run),
        manifest=f"results/corpus/{DATASET}/test/manifest.tsv",
    output:
        hyps="results/runs/{run}/eval/{cond}/hyps.tsv",
        wer="results/runs/{run}/eval/{cond}/wer.json",
    params:
        settings=as_json(EVAL_SETTINGS),
        streams=eval_stream_args,
        permute="",
        code=code_version("evaluation", "run"),
    log:
        "results/logs/evaluate/{run}/{cond}.log",
    benchmark:
        "results/benchmarks/evaluate/{run}/{cond}.tsv"
    threads: rule_threads("evaluate", 1)
    resources:
        **requests("evaluate", mem_mb=2000, runtime=30),
    shell:
        dmlm_cmd("evaluate") + " --checkpoint {input.checkpoint} {params.streams}"
        " --tokenizer {input.tokenizer} --manifest {input.manifest} {params.permute}"
        " --out-dir $(dirname {output.wer}) > {log} 2>&1"


use rule evaluate as evaluate_permuted with:
    output:
        hyps="results/runs/{run}/eval/{cond}/perm-{permuted}/hyps.tsv",
        wer="results/runs/{run}/eval/{cond}/perm-{permuted}/wer.json",
    wildcard_constraints:
        permuted="lips|image|ocr",
    params:
        settings=as_json({**EVAL_SETTINGS, "permutation_seed": permutation_seed(config)}),
        streams=eval_stream_args,
        permute="--permute {permuted}",
        code=code_version("evaluation", "run"),
    log:
        "results/logs/evaluate_permuted/{run}/{cond}/{permuted}.log",
    benchmark:
        "results/benchmarks/evaluate_permuted/{run}/{cond}/{permuted}.tsv"
    threads: rule_threads("evaluate_permuted", 1, like="evaluate")
    resources:
        # the same decoding as evaluate, and the same request unless the preset gives its own:
        # 1.1 GB, 15 s per job on the default preset; 0.76 GB, 6-9 s on the tiny one (Slurm test node)
        **requests("evaluate_permuted", mem_mb=2000, runtime=30, like="evaluate"),
