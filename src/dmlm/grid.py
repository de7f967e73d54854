"""The experiment grid: which training runs and which evaluations a config asks for.

A *run* is one trained model, named by its axis values so that ``results/runs/`` reads like the
grid: ``{modalities}.{encoders}[.{layout}].{train_noise}.{backbone}.{loss_weights}.s{seed}``, e.g.
``A+I.mfcc+patches.mix.opt-small.paper.s0`` (``encoders``: the named tokenizer of each
discrete modality of the set, in the set's order; OCR is text and has none). Every axis value is a
name defined in the config (the values behind the names are passed to the rules as params, so
editing them reruns the runs that use them). A run shared by two studies appears once. An
*evaluation* is a run at one test condition.

Sequence axes (``dmlm.model.sequence``): a study's ``order`` (default ``audio_first``) decides the
order of the modality blocks; the run name writes its modality set (and encoders) *in that order*,
so ``L+A.pixels+mfcc...`` reads lips first. ``layout`` (default ``blocked``) appears in the name
only when it is ``interleaved`` and the run has two synchronized modalities (audio and lips); for
any other run it changes nothing, so the run is the blocked one. Axis values that give the same
sequence give the same run, trained once; the evaluation table keeps the study's own values in
its ``modalities``, ``order`` and ``layout`` columns.
"""

from __future__ import annotations

import functools
import itertools
import json
import re

import pandas as pd

from dmlm.errors import DmlmError
from dmlm.model.sequence import LAYOUTS, SYNCHRONIZED, input_streams
from dmlm.model.vocab import VocabLayout

MODALITY_OF_LETTER = {"A": "audio", "L": "lips", "I": "image", "O": "ocr"}
DISCRETE = ("audio", "lips", "image")  # modalities with a codebook (OCR is text)
RUN_AXES = ("modalities", "encoders", "layout", "train_noise", "backbone", "loss_weights", "seed")
#: named block orders (a study's ``order`` may also be a permutation of the four letters, e.g. LAIO)
ORDERS = ("audio_first", "audio_last", "written")
DEFAULT_ORDER = "audio_first"
DEFAULT_LAYOUT = "blocked"
AUDIO_ONLY = "A"
LOCAL_TEXT = "local"  # name of the locally trained text tokenizer (a pretrained backbone brings its own)


def modality_names(modset: str) -> list[str]:
    """'A+O' -> ['audio', 'ocr'] (input order as written)."""
    return [MODALITY_OF_LETTER[letter] for letter in modset.split("+")]


def same_modalities(modset: str, modalities: list[str]) -> bool:
    """Whether the set ``modset`` (e.g. 'O+A') names exactly ``modalities``, in any order (so 'A+A'
    names no run's)."""
    return sorted(modality_names(modset)) == sorted(modalities)


def ordered(modset: str, order: str) -> str:
    """The modality set in sequence order: ``audio_first`` (audio, then the others as written),
    ``audio_last`` (the others as written, then audio), ``written`` (as written), or a permutation
    of the letters ALIO (each modality by its place in it). ``ordered('L+A+O', 'audio_first')`` is
    ``'A+L+O'``."""
    letters = modset.split("+")
    rest = [x for x in letters if x != "A"]
    audio = ["A"] if "A" in letters else []
    if order == "audio_first":
        letters = audio + rest
    elif order == "audio_last":
        letters = rest + audio
    elif order != "written":
        if sorted(order) != sorted(MODALITY_OF_LETTER):
            raise DmlmError(f"order {order!r}: expected one of {', '.join(ORDERS)} or a permutation of ALIO")
        letters = sorted(letters, key=order.index)
    return "+".join(letters)


def run_layout(modset: str, layout: str) -> str:
    """The layout a run of ``modset`` really has: interleaving needs two synchronized modalities."""
    synchronized = [m for m in modality_names(modset) if m in SYNCHRONIZED]
    return layout if len(synchronized) >= 2 else DEFAULT_LAYOUT


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


def mix_settings(config: dict, cond: str) -> dict:
    """What mixing a noisy condition reads (the mix rule's settings); a fixed test SNR is a recipe
    that noises every utterance at that one SNR."""
    if cond.startswith("mix-"):
        recipe = config["noise"]["train_noise"][cond.removeprefix("mix-")]
    else:
        recipe = {"fraction_noisy": 1.0, "snrs": [snr_of_cond(cond)]}
    placement = {"placement": placement_of_cond(config, cond)}
    if placement["placement"] == "random_segment":
        placement["segment_fraction"] = config["noise"].get("segment_fraction", 0.5)
    return {"seed": config["seed"], **placement, **recipe}


def train_cond(config: dict, recipe: str) -> str:
    """Audio condition of a training-noise recipe; a recipe that adds no noise is just clean."""
    spec = config["noise"]["train_noise"][recipe]
    return "clean" if spec["fraction_noisy"] == 0 or not spec["snrs"] else f"mix-{recipe}"


def run_name(
    modalities: str, encoders: str, train_noise: str, backbone: str, loss_weights: str, seed: int,
    layout: str = DEFAULT_LAYOUT,
) -> str:
    """``modalities`` in sequence order; ``layout`` is written only when it is not the default."""
    arrangement = "" if layout == DEFAULT_LAYOUT else f".{layout}"
    return f"{modalities}.{encoders}{arrangement}.{train_noise}.{backbone}.{loss_weights}.s{int(seed)}"


def parse_run_name(run: str) -> dict:
    parts = run.split(".")
    if len(parts) == 6:
        parts.insert(2, DEFAULT_LAYOUT)
    modalities, encoders, layout, train_noise, backbone, loss_weights, seed = parts
    return dict(
        modalities=modalities,
        encoders=encoders,
        layout=layout,
        train_noise=train_noise,
        backbone=backbone,
        loss_weights=loss_weights,
        seed=int(seed.removeprefix("s")),
    )


def run_input_streams(run: str) -> list[str]:
    """The streams a run's sequences read besides the transcript: its modalities in order, then
    the token times of the modalities it interleaves (``<m>.times``)."""
    return list(_run_input_streams(run))


@functools.lru_cache(maxsize=None)
def _run_input_streams(run: str) -> tuple[str, ...]:
    # asked once per job at plan time (thousands); the answer depends on the name only
    axes = parse_run_name(run)
    modalities = modality_names(axes["modalities"])
    # only the order and arrangement matter here; the sizes are placeholders
    layout = VocabLayout(modalities, {m: 1 for m in DISCRETE}, 1, arrangement=axes["layout"])
    return tuple(input_streams(layout))


def run_pattern(config: dict) -> str:
    """A regex that matches every run name of ``config`` (``run_name``'s structure, each axis one
    of the names the config defines) and no path with more or other parts: the ``run`` wildcard
    constraint. Built from the parts, not as an alternation of the run names, whose length
    (thousands of characters at paper scale) Snakemake pays at each wildcard substitution."""
    def one_of(names) -> str:
        return "(?:" + "|".join(map(re.escape, sorted(names))) + ")"

    letter = "[" + "".join(MODALITY_OF_LETTER) + "]"
    encoder = one_of({name for m in DISCRETE for name in config["tokens"].get(m, {})} or {"-"})
    layout = one_of(x for x in LAYOUTS if x != DEFAULT_LAYOUT)
    return (
        rf"{letter}(?:\+{letter})*\.(?:-|{encoder}(?:\+{encoder})*)(?:\.{layout})?"
        rf"\.{one_of(config['noise']['train_noise'])}\.{one_of(config['backbones'])}"
        rf"\.{one_of(config['loss_weights'])}\.s\d+"
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
    """One row per (study, run, test condition), with the run's axis values as columns. Where
    several axis values give one run (e.g. any order of an audio-only run), the row holds the
    first values in the study's lists (e.g. ``audio_first``, ``blocked``)."""
    # planning asks for it several times (rules, report settings, config checks): built once per
    # config content; each caller gets its own copy. Key order is content here (the first
    # tokenizer listed is a modality's default), so the key keeps it: no sort_keys
    key = json.dumps(config, default=repr)
    if key not in _EVALS_CACHE:
        if len(_EVALS_CACHE) >= 8:
            _EVALS_CACHE.pop(next(iter(_EVALS_CACHE)))
        _EVALS_CACHE[key] = _build_evals_table(config)
    return _EVALS_CACHE[key].copy()


_EVALS_CACHE: dict[str, pd.DataFrame] = {}


def _build_evals_table(config: dict) -> pd.DataFrame:
    rows = []
    for study, spec in config["studies"].items():
        choices = [(m, e) for m in spec["modalities"] for e in encoder_choices(config, spec, m)]
        for (modset, encoders), order, layout, noise, backbone, weights, seed, snr in itertools.product(
            choices,
            spec.get("order", [DEFAULT_ORDER]),
            spec.get("layout", [DEFAULT_LAYOUT]),
            spec["train_noise"],
            spec["backbone"],
            spec["loss_weights"],
            range(spec["seeds"]),
            spec["test_snrs"],
        ):
            joined = "+".join(encoders.values()) or "-"
            # the run name lists the modalities (and their encoders) in sequence order
            in_order = ordered(modset, order)
            run_joined = "+".join(encoders[m] for m in modality_names(in_order) if m in encoders) or "-"
            # a run is tested with noise placed as in its training recipe
            placement = recipe_placement(config, noise)
            marked = placement if placement != config["noise"]["placement"] else None
            rows.append(
                dict(
                    study=study,
                    run=run_name(in_order, run_joined, noise, backbone, weights, seed, run_layout(modset, layout)),
                    modalities=modset,
                    order=order,
                    layout=layout,
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
    return pd.DataFrame(rows).drop_duplicates(["study", "run", "cond"]).reset_index(drop=True)


def runs_table(config: dict) -> pd.DataFrame:
    """One row per distinct training run over all studies."""
    evals = evals_table(config)
    runs = evals.drop_duplicates("run")["run"].reset_index(drop=True)
    # the axes as the run sees them (the modality set in sequence order, its real layout)
    return pd.DataFrame([{"run": run, **parse_run_name(run)} for run in runs], columns=["run", *RUN_AXES])


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
            if k in (*modalities, "transcript", "variant")
        },
        sequence={
            "layout": axes["layout"],
            "over_length": config.get("sequence", {}).get("over_length", "error"),
        },
        training=run_training(config["training"], modalities, axes["backbone"]),
        seed=axes["seed"],
    )


def run_training(training: dict, modalities: list[str], backbone: str) -> dict:
    """`training` as a run reads it: `per_backbone.<backbone>` overrides the optimisation settings
    of that backbone's runs (a recipe chosen per backbone; the key reruns no other backbone's run),
    and its `per_modalities.<set>` (e.g. `A+O`, letters in any order) those of the backbone's runs of
    that modality set over the backbone's (the paper tunes Mamba per modality combination);
    `drop_audio_beside` (a list of modalities) keeps the modality-dropout curriculum for the runs
    that read one of them beside audio and turns it off for the other multimodal runs. Audio-only
    runs ignore `drop_audio` and keep it as written, so the key reruns none of them."""
    training = dict(training)
    recipe = dict(training.pop("per_backbone", {}).get(backbone, {}))
    per_modalities = recipe.pop("per_modalities", {})
    training.update(recipe)
    for modset, settings in per_modalities.items():
        if same_modalities(modset, modalities):
            training.update(settings)
    beside = training.pop("drop_audio_beside", None)
    if beside is not None and len(modalities) > 1 and not set(beside) & set(modalities):
        training.pop("drop_audio", None)
        training.pop("drop_audio_until", None)
    return training
