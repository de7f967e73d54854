# Corpus: the 3-Equations generator (speech, lip video, image), then OCR of the images' pixels.


def split_size(wildcards):
    return config["corpus"]["splits"][wildcards.split]


rule corpus:
    output:
        manifest="results/corpus/{dataset}/{split}/manifest.tsv",
        audio=ragged("results/corpus/{dataset}/{split}/audio"),
        lips=ragged("results/corpus/{dataset}/{split}/lips"),
        images="results/corpus/{dataset}/{split}/images.npy",
    params:
        n=split_size,
        settings=as_json(
            {
                "seed": config["seed"],
                **{k: config["corpus"][k] for k in ("image", "speech", "lips")},
            }
        ),
        code=code_version("corpus", "_corpus"),
    log:
        "results/logs/corpus/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/corpus/{dataset}/{split}.tsv"
    priority: PRIORITY_PREPARE_WIDE
    threads: rule_threads("corpus", 2)
    resources:
        **requests("corpus", mem_mb=2500, runtime=30),
    shell:
        dmlm_cmd("corpus") + " --split {wildcards.split} --n {params.n}"
        " --out-dir results/corpus/{wildcards.dataset}/{wildcards.split} > {log} 2>&1"


rule ocr:
    input:
        images="results/corpus/{dataset}/{split}/images.npy",
        manifest="results/corpus/{dataset}/{split}/manifest.tsv",
    output:
        "results/corpus/{dataset}/{split}/ocr.tsv",
    params:
        settings=as_json(config["corpus"]["ocr"]),
        code=code_version("corpus", "_ocr"),
    log:
        "results/logs/ocr/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/ocr/{dataset}/{split}.tsv"
    priority: PRIORITY_PREPARE_WIDE
    threads: rule_threads("ocr", 2)
    resources:
        **requests("ocr", mem_mb=2000, runtime=30),
    shell:
        dmlm_cmd("ocr") + " --images {input.images} --manifest {input.manifest}"
        " --out {output} > {log} 2>&1"
