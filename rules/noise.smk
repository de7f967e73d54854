# Noise: a noise bank (built in, or a MUSAN folder), then mixing at a target SNR over the
# configured placement (the authors': the second half of each spoken equation).


def bank_name():
    return config["noise"]["bank"]["name"]


def mix_settings(wildcards):
    return as_json(grid.mix_settings(config, wildcards.noisy_cond))


rule noise_bank:
    output:
        data=ragged("results/noise/{bank}/noise"),
        table="results/noise/{bank}/noise.tsv",
    params:
        settings=as_json({"seed": config["seed"], **config["noise"]["bank"]}),
        code=code_version("noise", "_noise_bank"),
    log:
        "results/logs/noise_bank/{bank}.log",
    benchmark:
        "results/benchmarks/noise_bank/{bank}.tsv"
    priority: PRIORITY_PREPARE
    threads: rule_threads("noise_bank", 1)
    resources:
        **requests("noise_bank", mem_mb=1000, runtime=20),
    shell:
        dmlm_cmd("noise-bank") + " --out-prefix results/noise/{wildcards.bank}/noise > {log} 2>&1"


rule mix:
    input:
        manifest="results/corpus/{dataset}/{split}/manifest.tsv",
        audio=ragged("results/corpus/{dataset}/{split}/audio"),
        noise=ragged(f"results/noise/{bank_name()}/noise"),
    output:
        audio=ragged("results/audio/{dataset}/{noisy_cond}/{split}"),
        snr="results/audio/{dataset}/{noisy_cond}/{split}.snr.tsv",
    params:
        settings=mix_settings,
        code=code_version("noise", "_mix"),
    log:
        "results/logs/mix/{dataset}/{noisy_cond}/{split}.log",
    benchmark:
        "results/benchmarks/mix/{dataset}/{noisy_cond}/{split}.tsv"
    priority: PRIORITY_PREPARE
    threads: rule_threads("mix", 1)
    resources:
        **requests("mix", mem_mb=3500, runtime=10),
    shell:
        dmlm_cmd("mix") + " --corpus-dir results/corpus/{wildcards.dataset}/{wildcards.split}"
        f" --noise-prefix results/noise/{bank_name()}/noise"
        " --out-prefix results/audio/{wildcards.dataset}/{wildcards.noisy_cond}/{wildcards.split}"
        " > {log} 2>&1"
