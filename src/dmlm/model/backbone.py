"""Backbones: a registry of model families, each building a transformers causal LM.

``settings`` is one entry of the config's ``backbones`` section, e.g.
``{family: opt, hidden: 192, layers: 4, heads: 4, ffn: 768, max_positions: 1024, dropout: 0.1}``,
optionally with ``pretrained: <local folder>`` (a ``save_pretrained`` folder of that family; its
architecture, dropout and weights are used and its token embeddings are resized to the run's
vocabulary; the other keys are then ignored). A pretrained backbone reads text through its own
tokenizer (the folder's ``tokenizer.json``) and uses the native vocabulary layout
(``vocab_layout``): its text ids and embedding rows are kept, the run's other tokens appended.

A new family (e.g. Mamba) registers a ``Family`` with ``build`` (settings, vocab_size, name,
specials) -> model, and the config/model classes that ``checkpoint.load`` uses to rebuild a saved model.
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
    max_positions: Callable  # (model) -> int


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
        raise DmlmError(f"backbones.{name}.pretrained: {path} is not a folder with a config.json")
    return path


def _build_opt(settings: dict, vocab_size: int, name: str, specials: dict):
    from transformers import OPTConfig, OPTForCausalLM

    if settings.get("pretrained"):
        path = _pretrained_folder(settings, name)
        try:
            model = OPTForCausalLM.from_pretrained(str(path), local_files_only=True)
        except Exception as err:  # malformed config or weights
            raise DmlmError(f"backbones.{name}.pretrained: cannot load an OPT model from {path}: {err}") from err
        model.resize_token_embeddings(vocab_size)
        model.config.pad_token_id, model.config.bos_token_id = specials["pad"], specials["bos"]
        model.config.eos_token_id = specials["eos"]
        model.model.decoder.embed_tokens.padding_idx = specials["pad"]
        return model

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
    )
    return OPTForCausalLM(config)


def _opt_config():
    from transformers import OPTConfig

    return OPTConfig


def _opt_model():
    from transformers import OPTForCausalLM

    return OPTForCausalLM


FAMILIES: dict[str, Family] = {
    "opt": Family(_build_opt, _opt_config, _opt_model, lambda m: int(m.config.max_position_embeddings)),
}


def get_family(family: str, name: str = "?") -> Family:
    if family not in FAMILIES:
        raise DmlmError(f"backbones.{name}.family: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[family]


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


def max_positions(settings: dict, model=None, name: str = "?") -> int:
    """The longest sequence the backbone takes: from the built model when given (a pretrained
    folder decides), else from ``settings["max_positions"]``."""
    family = get_family(settings.get("family"), name)
    if model is not None:
        return family.max_positions(model)
    return _need(settings, "max_positions", name)
