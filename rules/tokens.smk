# Tokens: codebooks fitted once on the clean training split, then every split (and, for audio,
# every noise condition) encoded to unit ids; OCR and transcripts through a text tokenizer: the
# local one (`local`) or a pretrained backbone's own (named after the backbone).

def media_path(kind, split, cond="clean"):
    """What the CLI reads: a ragged prefix (audio, lips) or an .npy file (images)."""
    if kind == "image":
        return f"{corpus_dir(split)}/images.npy"
    if kind == "audio" and cond != "clean":
        return f"results/audio/{DATASET}/{cond}/{split}"
    return f"{corpus_dir(split)}/{kind}"


def media_files(kind, split, cond="clean"):
    path = media_path(kind, split, cond)
    if kind == "image":  # the raster oracle also reads the manifest beside the images
        return [path, f"{corpus_dir(split)}/manifest.tsv"]
    if kind == "lips":  # and the viseme oracle the manifest's phoneme timing beside the video
        return [*ragged_files(path), f"{corpus_dir(split)}/manifest.tsv"]
    return ragged_files(path)


def encoder_weights(kind, encoder):
    """The weights a neural tokenizer reads (CRAFT, Whisper), where the config names them."""
    return weights_inputs(config["tokens"][kind][encoder].get("weights"))


def codebook_media(wildcards):
    """Codebooks are fitted on the clean training split only."""
    return media_path(wildcards.kind, "train")


def codebook_media_files(wildcards):
    return media_files(wildcards.kind, "train")


def codebook_settings(wildcards):
    return as_json(
        {
            "seed": config["seed"],
            "sample_rate": config["corpus"]["speech"]["sample_rate"],
            **config["tokens"][wildcards.kind][wildcards.encoder],
        }
    )


def audio_media(wildcards):
    return media_path("audio", wildcards.split, wildcards.cond)


def audio_media_files(wildcards):
    return media_files("audio", wildcards.split, wildcards.cond)


def visual_media(wildcards):
    return media_path(wildcards.modality, wildcards.split)


def visual_media_files(wildcards):
    return media_files(wildcards.modality, wildcards.split)


rule fit_codebook:
    input:
        codebook_media_files,
        weights=lambda wildcards: encoder_weights(wildcards.kind, wildcards.encoder),
    output:
        "results/codebooks/{dataset}/{kind}/{encoder}.npz",
    wildcard_constraints:
        kind="audio|lips|image",
    params:
        settings=codebook_settings,
        media=codebook_media,
        code=code_version("tokens", "_fit_codebook"),
    log:
        "results/logs/fit_codebook/{dataset}/{kind}/{encoder}.log",
    benchmark:
        "results/benchmarks/fit_codebook/{dataset}/{kind}/{encoder}.tsv"
    priority: PRIORITY_PREPARE_WIDE
    threads: rule_threads("fit_codebook", 2)
    resources:
        **requests("fit_codebook", mem_mb=2000, runtime=20, gpu="encoder"),
    shell:
        dmlm_cmd("fit-codebook") + " --modality {wildcards.kind} --media {params.media}"
        " --out {output} > {log} 2>&1"


rule encode_audio:
    input:
        codebook="results/codebooks/{dataset}/audio/{encoder}.npz",
        media=audio_media_files,
        weights=lambda wildcards: encoder_weights("audio", wildcards.encoder),
    output:
        ragged("results/tokens/{dataset}/audio/{encoder}/{cond}/{split}"),
        # token start times (s), read by interleaved sequences (dmlm.model.sequence)
        ragged("results/tokens/{dataset}/audio/{encoder}/{cond}/{split}.times"),
    params:
        settings=as_json({}),
        media=audio_media,
        code=code_version("tokens", "_encode"),
    log:
        "results/logs/encode/{dataset}/audio/{encoder}/{cond}/{split}.log",
    benchmark:
        "results/benchmarks/encode_audio/{dataset}/{encoder}/{cond}/{split}.tsv"
    priority: PRIORITY_PREPARE
    threads: rule_threads("encode_audio", 1)
    resources:
        **requests("encode_audio", mem_mb=3000, runtime=20, gpu="encoder"),
    shell:
        dmlm_cmd("encode") + " --modality audio --codebook {input.codebook} --media {params.media}"
        " --out-prefix results/tokens/{wildcards.dataset}/audio/{wildcards.encoder}/{wildcards.cond}/{wildcards.split}"
        " > {log} 2>&1"


rule encode_visual:
    input:
        codebook="results/codebooks/{dataset}/{modality}/{encoder}.npz",
        media=visual_media_files,
        weights=lambda wildcards: encoder_weights(wildcards.modality, wildcards.encoder),
    output:
        ragged("results/tokens/{dataset}/{modality}/{encoder}/{split}"),
    wildcard_constraints:
        modality="image",
    params:
        settings=as_json({}),
        media=visual_media,
        code=code_version("tokens", "_encode"),
    log:
        "results/logs/encode/{dataset}/{modality}/{encoder}/{split}.log",
    benchmark:
        "results/benchmarks/encode_visual/{dataset}/{modality}/{encoder}/{split}.tsv"
    priority: PRIORITY_PREPARE
    threads: rule_threads("encode_visual", 1)
    resources:
        **requests("encode_visual", mem_mb=2000, runtime=20, gpu="encoder"),
    shell:
        dmlm_cmd("encode") + " --modality {wildcards.modality} --codebook {input.codebook}"
        " --media {params.media}"
        " --out-prefix results/tokens/{wildcards.dataset}/{wildcards.modality}/{wildcards.encoder}/{wildcards.split}"
        " > {log} 2>&1"


# lips follow the audio's time line: their token times are written too (interleaved sequences)
use rule encode_visual as encode_lips with:
    output:
        ragged("results/tokens/{dataset}/{modality}/{encoder}/{split}"),
        ragged("results/tokens/{dataset}/{modality}/{encoder}/{split}.times"),
    wildcard_constraints:
        modality="lips",


def text_tokenizer_inputs(wildcards):
    """The local tokenizer learns from the train split's text; a backbone's is copied from its folder."""
    if wildcards.textenc == grid.LOCAL_TEXT:
        return [f"{corpus_dir('train')}/manifest.tsv", f"{corpus_dir('train')}/ocr.tsv"]
    return [f"{config['backbones'][wildcards.textenc]['pretrained']}/tokenizer.json"]


def text_tokenizer_settings(wildcards):
    if wildcards.textenc == grid.LOCAL_TEXT:
        return as_json(config["tokens"]["text"])
    return as_json({"backbone": wildcards.textenc, "pretrained": config["backbones"][wildcards.textenc]["pretrained"]})


def text_tokenizer_args(wildcards):
    if wildcards.textenc == grid.LOCAL_TEXT:
        return f"--manifest {corpus_dir('train')}/manifest.tsv --ocr {corpus_dir('train')}/ocr.tsv"
    return ""


rule text_tokenizer:
    input:
        text_tokenizer_inputs,
    output:
        "results/tokens/{dataset}/text/{textenc}/tokenizer.json",
    params:
        settings=text_tokenizer_settings,
        args=text_tokenizer_args,
        code=code_version("tokens", "_text_tokenizer"),
    log:
        "results/logs/text_tokenizer/{dataset}/{textenc}.log",
    benchmark:
        "results/benchmarks/text_tokenizer/{dataset}/{textenc}.tsv"
    priority: PRIORITY_PREPARE
    threads: rule_threads("text_tokenizer", 1)
    resources:
        **requests("text_tokenizer", mem_mb=500, runtime=5),
    shell:
        dmlm_cmd("text-tokenizer") + " {params.args} --out {output} > {log} 2>&1"


def text_table(wildcards):
    name = "manifest.tsv" if wildcards.field == "transcript" else "ocr.tsv"
    return f"{corpus_dir(wildcards.split)}/{name}"


rule encode_text:
    input:
        tokenizer="results/tokens/{dataset}/text/{textenc}/tokenizer.json",
        table=text_table,
    output:
        ragged("results/tokens/{dataset}/{field}/{textenc}/{split}"),
    params:
        settings=as_json({}),
        code=code_version("tokens", "_encode_text"),
    log:
        "results/logs/encode_text/{dataset}/{field}/{textenc}/{split}.log",
    benchmark:
        "results/benchmarks/encode_text/{dataset}/{field}/{textenc}/{split}.tsv"
    priority: PRIORITY_PREPARE
    threads: rule_threads("encode_text", 1)
    resources:
        **requests("encode_text", mem_mb=500, runtime=5),
    shell:
        dmlm_cmd("encode-text") + " --tokenizer {input.tokenizer} --table {input.table}"
        " --column {wildcards.field}"
        " --out-prefix results/tokens/{wildcards.dataset}/{wildcards.field}/{wildcards.textenc}/{wildcards.split}"
        " > {log} 2>&1"
