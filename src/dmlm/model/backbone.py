"""Backbones: a registry of model families, each building a transformers causal LM.

``settings`` is one entry of the config's ``backbones`` section, e.g.
``{family: opt, hidden: 192, layers: 4, heads: 4, ffn: 768, max_positions: 1024, dropout: 0.1}`` or
``{family: mamba, hidden: 192, layers: 8, state_size: 16, expand: 2, conv_kernel: 4}``,
optionally with ``pretrained: <local folder>`` (a ``save_pretrained`` folder of that family; its
architecture, dropout and weights are used and its token embeddings are resized to the run's
vocabulary; the other keys are then ignored). A pretrained backbone reads text through its own
tokenizer (the folder's ``tokenizer.json``) and uses the native vocabulary layout
(``vocab_layout``): its text ids and embedding rows are kept, the run's other tokens appended.

Families:

- ``opt``: transformers' OPT (the paper's OPT-125M: hidden 768, 12 layers, 12 heads, ffn 3072),
  SDPA attention. Learned absolute positions: ``max_positions`` is the size of its position table
  and a hard limit.
- ``mamba``: transformers' Mamba (the paper's Mamba-130M: hidden 768, 24 layers, state 16, expand 2,
  conv 4). On CUDA with ``mamba-ssm`` and ``causal-conv1d`` installed transformers runs their
  kernels; elsewhere its PyTorch path, with the selective scan of ``dmlm.model.mamba_scan`` (a
  sequential scan with a hand-written backward, fused in C where a compiler works; transformers'
  own reference scan has a quadratic backward, and mambapy's parallel scan, ``use_mambapy``, kept
  on as the fallback, was measured slower on the CPU). Length policy: Mamba has no position table, so it has no intrinsic limit. An optional
  ``max_positions`` sets one (kept in the model config as ``max_position_embeddings`` and enforced
  like OPT's: longer sequences are an error, never truncated); without it any length is accepted,
  bounded only by memory and time.

A family registers a ``Family`` with ``build`` (settings, vocab_size, name, specials) -> model, the
config/model classes that ``checkpoint.load`` uses to rebuild a saved model, and whether its
decoder takes position ids (``positional``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmlm.errors import DmlmError
from dmlm.model.vocab import BOS, EOS, PAD, VocabLayout, text_vocab_size


@dataclass(frozen=True)
class Family:
    build: Callable  # (settings: dict, vocab_size: int, name: str, specials: dict) -> torch.nn.Module
    config_class: Callable  # () -> transformers config class
    model_class: Callable  # () -> transformers model class
    model_type: str  # transformers' config.model_type of the family's models
    positional: bool  # True: the model takes position_ids and an attention mask at every decoding step


def _need(settings: dict, key: str, name: str, kind=int, positive=True):
    if key not in settings:
        raise DmlmError(f"backbones.{name}.{key} is missing")
    value = settings[key]
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise DmlmError(f"backbones.{name}.{key}: expected a number, got {settings[key]!r}") from None
    if positive and not value > 0:
        raise DmlmError(f"backbones.{name}.{key} must be positive, got {value}")
    return value


def _pretrained_folder(settings: dict, name: str) -> Path:
    path = Path(settings["pretrained"])
    if not (path.is_dir() and (path / "config.json").exists()):
        raise DmlmError(f"backbones.{name}.pretrained: {path} is not a model folder (expected a config.json "
                        "and weights saved by save_pretrained)")
    return path


def pretrained_config(settings: dict, name: str) -> tuple[Path, dict]:
    """(folder, config.json) of a pretrained backbone whose config parses as a mapping of the
    backbone's family; DmlmError naming the key and file (for bad JSON its line) otherwise."""
    import json

    path = _pretrained_folder(settings, name)
    config_path, key = path / "config.json", f"backbones.{name}.pretrained"
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise DmlmError(f"{key}: {config_path} line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DmlmError(f"{key}: cannot read {config_path}: {err}") from None
    if not isinstance(config, dict):
        raise DmlmError(f"{key}: {config_path} holds a JSON {type(config).__name__}, not a model config (a mapping)")
    family = settings.get("family")
    if config.get("model_type") != get_family(family, name).model_type:
        # transformers would load the weights it recognises and initialise the rest at random
        raise DmlmError(f"{key}: {config_path} holds a {config.get('model_type')!r} model, not one of family {family!r}")
    return path, config


def _load_pretrained(model_class, what: str, settings: dict, vocab_size: int, name: str, specials: dict, **kw):
    """A ``save_pretrained`` folder's model, its token embeddings resized to ``vocab_size``."""
    path, _ = pretrained_config(settings, name)
    from dmlm.checksums import check_external

    check_external(path, f"backbones.{name}.pretrained")  # changed weights would load silently
    try:
        model = model_class.from_pretrained(str(path), local_files_only=True, **kw)
    except Exception as err:  # malformed config or weights, or another family's folder
        raise DmlmError(f"backbones.{name}.pretrained: cannot load {what} model from {path}: {err}") from err
    model.resize_token_embeddings(vocab_size)
    model.config.pad_token_id, model.config.bos_token_id = specials["pad"], specials["bos"]
    model.config.eos_token_id = specials["eos"]
    model.get_input_embeddings().padding_idx = specials["pad"]
    return model


def _build_opt(settings: dict, vocab_size: int, name: str, specials: dict):
    from transformers import OPTConfig, OPTForCausalLM

    if settings.get("pretrained"):
        return _load_pretrained(OPTForCausalLM, "an OPT", settings, vocab_size, name, specials, attn_implementation="sdpa")

    hidden = _need(settings, "hidden", name)
    heads = _need(settings, "heads", name)
    if hidden % heads:
        raise DmlmError(f"backbones.{name}: hidden ({hidden}) must be a multiple of heads ({heads})")
    dropout = _need(settings, "dropout", name, float, positive=False) if "dropout" in settings else 0.1
    if not 0.0 <= dropout < 1.0:
        raise DmlmError(f"backbones.{name}.dropout must be in [0, 1), got {dropout}")
    config = OPTConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=_need(settings, "layers", name),
        num_attention_heads=heads,
        ffn_dim=_need(settings, "ffn", name),
        max_position_embeddings=_need(settings, "max_positions", name),
        dropout=dropout,
        attention_dropout=0.0,
        word_embed_proj_dim=hidden,
        pad_token_id=specials["pad"],
        bos_token_id=specials["bos"],
        eos_token_id=specials["eos"],
        attn_implementation="sdpa",  # torch's fused attention (flash / memory-efficient kernels on CUDA)
    )
    return OPTForCausalLM(config)


def _opt_config():
    from transformers import OPTConfig

    return OPTConfig


def _opt_model():
    from transformers import OPTForCausalLM

    return OPTForCausalLM


def _build_mamba(settings: dict, vocab_size: int, name: str, specials: dict):
    from transformers import MambaConfig

    MambaForCausalLM = _mamba_model()
    limit = _need(settings, "max_positions", name) if settings.get("max_positions") is not None else None
    if settings.get("pretrained"):
        model = _load_pretrained(MambaForCausalLM, "a Mamba", settings, vocab_size, name, specials)
        model.config.use_mambapy = True
        for layer in model.backbone.layers:
            layer.mixer.use_mambapy = True
        if limit is not None:
            model.config.max_position_embeddings = limit
        return model
    if "dropout" in settings:
        raise DmlmError(f"backbones.{name}.dropout: the mamba family has no dropout; remove the key")
    config = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=_need(settings, "hidden", name),
        num_hidden_layers=_need(settings, "layers", name),
        state_size=_need(settings, "state_size", name),
        expand=_need(settings, "expand", name),
        conv_kernel=_need(settings, "conv_kernel", name),
        use_mambapy=True,  # mambapy's parallel scan where the mamba-ssm kernels are absent
        pad_token_id=specials["pad"],
        bos_token_id=specials["bos"],
        eos_token_id=specials["eos"],
    )
    if limit is not None:
        config.max_position_embeddings = limit  # saved with the config; see the module's length policy
    return MambaForCausalLM(config)


def _mamba_config():
    from transformers import MambaConfig

    return MambaConfig


def _mamba_model():
    from transformers import MambaForCausalLM

    from dmlm.model import mamba_scan

    mamba_scan.install()  # our CPU scan, unless mamba-ssm's kernels are installed
    return MambaForCausalLM


FAMILIES: dict[str, Family] = {
    "opt": Family(_build_opt, _opt_config, _opt_model, "opt", positional=True),
    "mamba": Family(_build_mamba, _mamba_config, _mamba_model, "mamba", positional=False),
}


def get_family(family: str, name: str = "?") -> Family:
    if family not in FAMILIES:
        raise DmlmError(f"backbones.{name}.family: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[family]


def family_of(model) -> Family:
    """The registered family of a built model (by its config's ``model_type``)."""
    for family in FAMILIES.values():
        if family.model_type == model.config.model_type:
            return family
    raise DmlmError(f"no backbone family for a {model.config.model_type!r} model")


def model_max_positions(model) -> int | None:
    """The longest sequence a built model takes (None: no limit, e.g. Mamba without max_positions)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    return None if limit is None else int(limit)


def build_backbone(settings: dict, vocab_size: int, name: str = "?", layout: VocabLayout | None = None):
    """A freshly initialised (or pretrained, resized) causal LM for ``vocab_size`` tokens.

    Seed torch before calling for a reproducible initialisation. ``name`` is the backbone's key in
    the config, used in error messages. The model's pad/bos/eos ids are the ``layout``'s (default:
    the local layout's)."""
    specials = {"pad": PAD, "bos": BOS, "eos": EOS}
    if layout is not None:
        specials = {"pad": layout.pad, "bos": layout.bos, "eos": layout.eos}
    return get_family(settings.get("family"), name).build(settings, int(vocab_size), name, specials)


def native_ids(settings: dict, name: str = "?") -> dict:
    """``{"embeddings", "pad", "bos", "eos"}`` of a pretrained backbone, from its folder's config."""
    path = _pretrained_folder(settings, name)
    try:
        config = get_family(settings.get("family"), name).config_class().from_pretrained(str(path))
    except Exception as err:
        raise DmlmError(f"backbones.{name}.pretrained: cannot read {path / 'config.json'}: {err}") from err
    return {
        "embeddings": int(config.vocab_size),
        "pad": config.pad_token_id,
        "bos": config.bos_token_id,
        "eos": config.eos_token_id,
    }


def vocab_layout(settings: dict, modalities, codebooks: dict, tokenizer_json, name: str = "?") -> VocabLayout:
    """The run's vocabulary: native for a pretrained backbone (its text ids kept), else local."""
    native = native_ids(settings, name) if settings.get("pretrained") else None
    if native is not None and text_vocab_size(tokenizer_json) > native["embeddings"]:
        raise DmlmError(
            f"backbones.{name}.pretrained: the text tokenizer {tokenizer_json} has "
            f"{text_vocab_size(tokenizer_json)} ids but the model only {native['embeddings']} "
            "embeddings; is it this backbone's tokenizer?"
        )
    return VocabLayout.from_tokenizer(modalities, codebooks, tokenizer_json, native)


def max_positions(settings: dict, model=None, name: str = "?") -> int | None:
    """The longest sequence the backbone takes (None: no limit): from the built model when given
    (a pretrained OPT folder decides), else from ``settings["max_positions"]`` (optional for Mamba)."""
    family = get_family(settings.get("family"), name)
    if model is not None:
        return model_max_positions(model)
    if not family.positional and settings.get("max_positions") is None:
        return None
    return _need(settings, "max_positions", name)
