"""Start-up checks of what a config's jobs would find out late (issue 18): each returns a list of
problems (``config key <key>: <what is wrong>``) for ``dmlm.config.check_references``.

They run on a schema-valid config and read only headers and small files (a noise file's header, a
pretrained folder's config.json), never the data or weights themselves; the validation cache
(``dmlm.validation_cache``) keys on the files they read.
"""

from __future__ import annotations

from pathlib import Path

from dmlm.errors import DmlmError

# transformers' names for the weights of a save_pretrained folder (whole or sharded)
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
MIN_PERMUTED_TEST = 2  # a derangement (perceptual score) moves every item: one item cannot move


def check_train_noise(config: dict) -> list[str]:
    """A recipe that noises utterances needs SNRs to draw from; a repeated SNR is a typo that
    would silently double its weight in the draw."""
    problems = []
    for name, recipe in config["noise"]["train_noise"].items():
        key = f"config key noise.train_noise.{name}.snrs"
        snrs = recipe["snrs"]
        if recipe["fraction_noisy"] > 0 and not snrs:
            problems.append(f"{key}: empty, but fraction_noisy is {recipe['fraction_noisy']} "
                            "(each noisy utterance draws its SNR from this list)")
        repeated = sorted({s for s in snrs if snrs.count(s) > 1})
        if repeated:
            problems.append(f"{key}: {', '.join(map(str, repeated))} dB listed more than once "
                            "(SNRs are drawn uniformly from the list; give each once)")
    return problems


def check_splits(config: dict) -> list[str]:
    """The perceptual score permutes a modality across the test items with a derangement, which
    needs two items (``dmlm.evaluation.permute``); it failed only after training."""
    from dmlm import grid
    from dmlm.report.settings import permuted_evals

    n_test = config["corpus"]["splits"]["test"]
    if n_test >= MIN_PERMUTED_TEST:
        return []
    permuted = permuted_evals(grid.evals_table(config).to_dict("records"))
    if not permuted:
        return []
    example = permuted[0]
    return [f"config key corpus.splits.test: {n_test} utterance(s), but the perceptual score of "
            f"{example['modalities']} (study {example['study']}) permutes {example['permuted']} across "
            f"the test items, which needs at least {MIN_PERMUTED_TEST}"]


def fitting_rows(modality: str, settings: dict, config: dict) -> tuple[int, str] | None:
    """An upper bound of the feature rows a codebook is fitted on, and how it follows from the
    config; None where only the data can tell (audio: rows grow with each utterance's length)."""
    encoder = settings["encoder"]
    if modality == "image" and encoder in ("patch_kmeans", "craft_kmeans"):
        # every image gives exactly (H // patch) * (W // patch) rows (patches or CRAFT cells)
        images = min(settings["fit_images"], config["corpus"]["splits"]["train"])
        size, patch = config["corpus"]["image"], settings["patch"]
        cells = (size["height"] // patch) * (size["width"] // patch)
        return images * cells, (f"{images} training image(s) (min of fit_images and corpus.splits.train) x "
                                f"{cells} patches of {patch} pixels in {size['width']}x{size['height']}")
    if modality == "lips":
        return settings["fit_frames"], "fit_frames: k-means sees at most that many (stacked) frames"
    return None


def check_codebook_sizes(config: dict, used: set[tuple[str, str]]) -> list[str]:
    """k-means needs at least ``n_units`` rows (``Codebook.fit``); refused here only where the
    config alone shows it cannot have them."""
    problems = []
    for modality, name in sorted(used):
        settings = config["tokens"][modality].get(name)
        if not settings or "n_units" not in settings:
            continue
        bound = fitting_rows(modality, settings, config)
        if bound is not None and settings["n_units"] > bound[0]:
            problems.append(f"config key tokens.{modality}.{name}.n_units: {settings['n_units']} units, but "
                            f"k-means is fitted on at most {bound[0]} rows ({bound[1]})")
    return problems


def check_pretrained(name: str, backbone: dict) -> list[str]:
    """A pretrained folder: config.json parses, holds the backbone's family and loads with
    transformers' config class; tokenizer.json and a weights file are there (weights not loaded)."""
    from dmlm.model.backbone import FAMILIES, pretrained_config

    key = f"config key backbones.{name}.pretrained"
    try:
        path, _ = pretrained_config(backbone, name)  # the checks the training job makes before loading
    except DmlmError as err:
        return [f"config key {err}"]
    config_path = path / "config.json"
    problems = []
    try:
        FAMILIES[backbone["family"]].config_class().from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # transformers raises many types for a config it cannot use
        problems.append(f"{key}: transformers cannot load {config_path}: {err}")
    if not (path / "tokenizer.json").is_file():
        problems.append(f"{key}: {path} has no tokenizer.json (a pretrained backbone reads text with its "
                        "own tokenizer: save it into the folder with save_pretrained)")
    if not any((path / w).is_file() for w in WEIGHTS_FILES):
        problems.append(f"{key}: {path} has no weights file (one of {', '.join(WEIGHTS_FILES)})")
    return problems


def check_noise_bank(config: dict) -> list[str]:
    """Every file of a MUSAN folder that the bank would read has a readable header, samples and a
    usable rate; the bank job would stop at the first bad one, after the corpus was built."""
    from dmlm.noise.musan import MIN_SAMPLE_RATE, musan_files, select_musan_files

    bank = config["noise"]["bank"]
    if "path" not in bank:
        return []
    key = "config key noise.bank.path"
    if not Path(bank["path"]).expanduser().is_dir():
        return [f"{key}: {bank['path']} is not a folder"]
    import soundfile as sf

    try:
        files = select_musan_files(musan_files(Path(bank["path"]).expanduser()),
                                   {"seed": config["seed"], **bank})
    except DmlmError as err:
        return [f"{key}: {err}"]
    problems = []
    for _, _, path in files:
        try:
            info = sf.info(str(path))
        except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            problems.append(f"{key}: cannot read audio file {path}: {err}")
            continue
        if info.frames == 0:
            problems.append(f"{key}: audio file {path} is empty (no samples)")
        elif info.samplerate < MIN_SAMPLE_RATE:
            problems.append(f"{key}: audio file {path}: sample rate {info.samplerate} Hz is below "
                            f"{MIN_SAMPLE_RATE} Hz")
    return problems
