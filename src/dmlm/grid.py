"""The experiment grid: which training runs and which evaluations a config asks for.

A *run* is one trained model, named by its axis values so that ``results/runs/`` reads like the
grid: ``{modalities}.{encoders}.{train_noise}.{backbone}.{loss_weights}.s{seed}``, e.g.
``A+I.mfcc+patches.mix.opt-small.paper.s0`` (``encoders``: the named tokenizer of each
discrete modality of the set, in the set's order; OCR is text and has none). Every axis value is a name defined in the config (the values
behind the names are passed to the rules as params, so editing them reruns the runs that use
them). A run shared by two studies appears once. An *evaluation* is a run at one test condition.
"""

from __future__ import annotations

import itertools

import pandas as pd

MODALITY_OF_LETTER = {"A": "audio", "L": "lips", "I": "image", "O": "ocr"}
DISCRETE = ("audio", "lips", "image")  # modalities with a codebook (OCR is text)
RUN_AXES = ("modalities", "encoders", "train_noise", "backbone", "loss_weights", "seed")
AUDIO_ONLY = "A"
LOCAL_TEXT = "local"  # name of the locally trained text tokenizer (a pretrained backbone brings its own)


def modality_names(modset: str) -> list[str]:
    """'A+O' -> ['audio', 'ocr'] (input order as written)."""
    return [MODALITY_OF_LETTER[letter] for letter in modset.split("+")]


def cond_of_snr(snr, placement: str | None = None) -> str:
    """A test SNR from the config (int or 'clean') as an audio-condition name: ``snr-10``, or
    ``snr-10@whole`` when the noise is placed other than the config's ``noise.placement``."""
    if snr == "clean":
        return "clean"
    return f"snr{int(snr)}" + (f"@{placement}" if placement else "")


def snr_of_cond(cond: str):
    return "clean" if cond == "clean" else int(cond.removeprefix("snr").partition("@")[0])


def placement_of_cond(config: dict, cond: str) -> str:
    """Where the noise of a noisy condition goes (a recipe's own placement, or the default)."""
    if cond.startswith("mix-"):
        return recipe_placement(config, cond.removeprefix("mix-"))
    return cond.partition("@")[2] or config["noise"]["placement"]


def recipe_placement(config: dict, recipe: str) -> str:
    return config["noise"]["train_noise"][recipe].get("placement", config["noise"]["placement"])


def train_cond(config: dict, recipe: str) -> str:
    """Audio condition of a training-noise recipe; a recipe that adds no noise is just clean."""
    spec = config["noise"]["train_noise"][recipe]
    return "clean" if spec["fraction_noisy"] == 0 or not spec["snrs"] else f"mix-{recipe}"


def run_name(modalities: str, encoders: str, train_noise: str, backbone: str, loss_weights: str, seed: int) -> str:
    return f"{modalities}.{encoders}.{train_noise}.{backbone}.{loss_weights}.s{int(seed)}"


def parse_run_name(run: str) -> dict:
    modalities, encoders, train_noise, backbone, loss_weights, seed = run.split(".")
    return dict(
        modalities=modalities,
        encoders=encoders,
        train_noise=train_noise,
        backbone=backbone,
        loss_weights=loss_weights,
        seed=int(seed.removeprefix("s")),
    )


def encoder_choices(config: dict, study: dict, modset: str) -> list[dict[str, str]]:
    """Every combination of named tokenizers for the discrete modalities of ``modset``."""
    modalities = [m for m in modality_names(modset) if m in DISCRETE]
    chosen = study.get("encoders", {})
    options = [chosen.get(m, [next(iter(config["tokens"][m]))]) for m in modalities]
    return [dict(zip(modalities, combo)) for combo in itertools.product(*options)]


def text_encoder(config: dict, backbone: str) -> str:
    """The text tokenizer a backbone reads: its own (named after it) when it is pretrained, else
    the locally trained one (``local``). Text token paths carry this name."""
    return backbone if config["backbones"][backbone].get("pretrained") else LOCAL_TEXT


def text_encoders(config: dict) -> list[str]:
    """Every text tokenizer the config's studies use (``local`` and/or pretrained backbones' names)."""
    names = {text_encoder(config, b) for spec in config["studies"].values() for b in spec["backbone"]}
    return sorted(names)


def run_text_encoder(config: dict, run: str) -> str:
    return text_encoder(config, parse_run_name(run)["backbone"])


def run_encoders(run: str) -> dict[str, str]:
    """{'audio': 'mfcc', 'image': 'patches'} for ``A+I.mfcc+patches...``."""
    axes = parse_run_name(run)
    modalities = [m for m in modality_names(axes["modalities"]) if m in DISCRETE]
    names = axes["encoders"].split("+") if axes["encoders"] != "-" else []
    return dict(zip(modalities, names))


def evals_table(config: dict) -> pd.DataFrame:
    """One row per (study, run, test condition), with the run's axis values as columns."""
    rows = []
    for study, spec in config["studies"].items():
        choices = [(m, e) for m in spec["modalities"] for e in encoder_choices(config, spec, m)]
        for (modset, encoders), noise, backbone, weights, seed, snr in itertools.product(
            choices,
            spec["train_noise"],
            spec["backbone"],
            spec["loss_weights"],
            range(spec["seeds"]),
            spec["test_snrs"],
        ):
            joined = "+".join(encoders.values()) or "-"
            # a run is tested with noise placed as in its training recipe
            placement = recipe_placement(config, noise)
            marked = placement if placement != config["noise"]["placement"] else None
            rows.append(
                dict(
                    study=study,
                    run=run_name(modset, joined, noise, backbone, weights, seed),
                    modalities=modset,
                    encoders=joined,
                    **{f"{m}_encoder": encoders.get(m, "") for m in DISCRETE},
                    train_noise=noise,
                    backbone=backbone,
                    loss_weights=weights,
                    seed=seed,
                    placement=placement,
                    snr=snr,
                    cond=cond_of_snr(snr, marked),
                )
            )
    return pd.DataFrame(rows)


def runs_table(config: dict) -> pd.DataFrame:
    """One row per distinct training run over all studies."""
    evals = evals_table(config)
    return evals.drop_duplicates("run")[["run", *RUN_AXES]].reset_index(drop=True)


def run_settings(config: dict, run: str) -> dict:
    """Exactly the config values that training `run` depends on (the train rule's params)."""
    axes = parse_run_name(run)
    modalities = modality_names(axes["modalities"])
    encoders = run_encoders(run)
    return dict(
        modalities=modalities,
        encoders=encoders,
        backbone_name=axes["backbone"],
        backbone=config["backbones"][axes["backbone"]],
        loss_weights_name=axes["loss_weights"],
        # only the weights of the modalities this run reads, so editing another one reruns nothing
        loss_weights={
            k: v
            for k, v in config["loss_weights"][axes["loss_weights"]].items()
            if k in (*modalities, "transcript")
        },
        training=config["training"],
        seed=axes["seed"],
    )
