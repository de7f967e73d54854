"""The ``training`` config section as a typed, checked ``TrainConfig`` (one run's optimisation recipe).

Keys (see workflow_config.yaml for each one's reason):

- ``max_steps``, ``batch_size``, ``lr``, ``min_lr_ratio``, ``warmup_steps``, ``weight_decay``,
  ``grad_clip`` (0: off), ``eval_every``, ``val_batches``: required.
- ``schedule`` (default ``cosine``): the learning rate after the linear warm-up. ``cosine``: cosine
  decay from ``lr`` to ``min_lr_ratio * lr`` over the remaining steps. ``wsd`` (warm-up, stable,
  decay; Hu et al. 2024, Hagele et al. 2024): ``lr`` held until the last ``decay_fraction`` of the
  steps after the warm-up, then a linear decay to ``min_lr_ratio * lr`` at ``max_steps``.
- ``decay_fraction`` (default 0.2, in (0, 1]): the share of the steps after the warm-up that ``wsd``
  spends decaying.
- ``grad_accum`` (default 1): micro-batches of ``batch_size`` per optimizer step; the loss is
  normalised over all of them, so a step equals one step on their union.
- ``early_stop_patience`` (default 0: off): stop after this many evaluations in a row without a
  better ``early_stop_metric``. Whatever the patience, the final checkpoint holds the weights of the
  best evaluation.
- ``early_stop_metric`` (default ``val_transcript_loss``): ``val_loss`` (the weighted loss) or
  ``val_transcript_loss`` (the transcript alone: what is decoded and scored).
- ``drop_audio`` (default 0: off, in [0, 1)): modality dropout (Neverova et al. 2016, ModDrop; Shi
  et al. 2022, AV-HuBERT). Each training sequence of a run with an input modality beside audio
  leaves its audio block out (tokens and tags) with this probability, drawn per sequence and step
  from the run seed, so the model must also learn to read the other modalities alone instead of
  settling on the audio. Validation and test sequences keep their audio. A run whose only input
  is audio ignores it.
- ``drop_audio_until`` (optional, in (0, 1]): a curriculum for ``drop_audio``: the share falls
  linearly from ``drop_audio`` at step 1 to 0 at this fraction of ``max_steps`` (and stays 0), so
  early steps push the model to read the other modality and the later ones train on full
  sequences, as validation and test are. Absent: the share stays ``drop_audio`` throughout.
- ``device`` (default ``auto``): ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.
- ``precision`` (default ``auto``): ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from dmlm.errors import DmlmError

#: the allowed values of the string keys
CHOICES = {
    "early_stop_metric": ("val_transcript_loss", "val_loss"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),
    "schedule": ("cosine", "wsd"),
}
#: keys a config may leave out (their defaults are the dataclass's)
OPTIONAL = ("schedule", "decay_fraction", "grad_accum", "drop_audio", "drop_audio_until", "early_stop_patience", "early_stop_metric", "device", "precision")


@dataclass
class TrainConfig:
    max_steps: int = 1200
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_every: int = 100
    val_batches: int = 8
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    grad_accum: int = 1
    drop_audio: float = 0.0  # 0 turns modality dropout off
    drop_audio_until: float | None = None  # None: a constant share
    early_stop_patience: int = 0  # 0 turns early stopping off
    early_stop_metric: str = "val_transcript_loss"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0

    @classmethod
    def from_settings(cls, training: dict, seed: int) -> "TrainConfig":
        """From the config's ``training`` section and the run seed; every key but those in
        ``OPTIONAL`` is required. Errors name the key."""
        names = {f.name for f in fields(cls)} - {"seed"}
        for key in training:
            if key not in names:
                raise DmlmError(f"training.{key}: unknown key (known: {', '.join(sorted(names))})")
        values = {}
        for f in fields(cls):
            if f.name == "seed" or (f.name not in training and f.name in OPTIONAL):
                continue
            if f.name not in training:
                raise DmlmError(f"training.{f.name} is missing")
            values[f.name] = _typed(f.name, training[f.name], f.type)
        cfg = cls(**values, seed=int(seed))
        for key in ("max_steps", "batch_size", "eval_every", "val_batches", "lr", "grad_accum"):
            if not getattr(cfg, key) > 0:
                raise DmlmError(f"training.{key} must be positive, got {getattr(cfg, key)}")
        for key in ("warmup_steps", "weight_decay", "grad_clip", "early_stop_patience"):
            if not getattr(cfg, key) >= 0:
                raise DmlmError(f"training.{key} must be >= 0, got {getattr(cfg, key)}")
        if not 0.0 <= cfg.min_lr_ratio <= 1.0:
            raise DmlmError(f"training.min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
        if not 0.0 <= cfg.drop_audio < 1.0:  # 1 would never train on the audio
            raise DmlmError(f"training.drop_audio must be in [0, 1), got {cfg.drop_audio}")
        if cfg.drop_audio_until is not None and not 0.0 < cfg.drop_audio_until <= 1.0:
            raise DmlmError(f"training.drop_audio_until must be in (0, 1], got {cfg.drop_audio_until}")
        if not 0.0 < cfg.decay_fraction <= 1.0:  # 0 would never reach min_lr_ratio * lr
            raise DmlmError(f"training.decay_fraction must be in (0, 1], got {cfg.decay_fraction}")
        return cfg

    def drop_audio_at(self, step: int) -> float:
        """Modality-dropout share of (1-based) ``step``: constant, or falling linearly to 0 at
        ``drop_audio_until * max_steps``."""
        if self.drop_audio_until is None:
            return self.drop_audio
        return self.drop_audio * max(0.0, 1.0 - (step - 1) / (self.drop_audio_until * self.max_steps))

    def lr_at(self, step: int) -> float:
        """Learning rate of (1-based) ``step``: linear warm-up, then ``schedule`` down to
        min_lr_ratio * lr at ``max_steps``."""
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        min_lr = self.lr * self.min_lr_ratio
        if self.schedule == "wsd":
            decay_steps = self.decay_fraction * (self.max_steps - self.warmup_steps)
            left = max(0, self.max_steps - step)  # steps after this one
            return self.lr if left >= decay_steps else min_lr + (self.lr - min_lr) * left / decay_steps
        ratio = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, ratio))) * (self.lr - min_lr)


def _typed(key: str, value, type_name):
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise DmlmError(f"training.{key}: expected one of {', '.join(CHOICES[key])}, got {value!r}")
        return value
    kind = int if type_name in ("int", int) else float
    if isinstance(value, bool):
        raise DmlmError(f"training.{key}: expected a number, got {value!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise DmlmError(f"training.{key}: expected a number, got {value!r}") from None
    if kind is int and out != value:
        raise DmlmError(f"training.{key}: expected an integer, got {value!r}")
    if kind is float and not math.isfinite(out):
        raise DmlmError(f"training.{key}: expected a finite number, got {value!r}")
    return out
