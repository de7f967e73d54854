"""Train one DMLM run: assembled multimodal sequences -> a small causal LM (nanoGPT-style loop).

``train_run`` reads ragged token streams, assembles every utterance (``batches``, ``sequence.assemble``),
checks lengths against the backbone, and trains with AdamW, linear warm-up then cosine decay to
``min_lr_ratio * lr``, and gradient clipping. The loss of a batch is
``sum(weight * CE) / sum(weight)`` over its target positions (padding weighs 0).

Files in ``out_dir``:

- ``train_log.tsv``: one row at step 0 and every ``eval_every`` steps and at the end: ``step``,
  ``train_loss`` (mean since the previous row), ``val_loss`` (the weighted loss),
  ``val_transcript_loss`` (plain CE over transcript tokens and ``</s>``), ``lr``,
  ``tokens_per_s`` (non-pad tokens per second of training since the previous row) and
  ``elapsed_s`` (wall time, summed over resumed attempts).
- ``state/last.pt``: written every ``eval_every`` steps (model, optimizer, step, RNG states, data
  position, log rows). A rerun with the same settings and data resumes from it, bit-exactly: the
  batch order is a pure function of (seed, step) and all RNG states are restored. A state from
  other settings or data is ignored (a note goes to stderr). It is deleted once
  ``checkpoint.pt`` is written.
- ``checkpoint.pt``: the final model (``checkpoint.save``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model import backbone as backbones
from dmlm.model import checkpoint
from dmlm.model.batches import (
    BatchOrder,
    Sequences,
    assemble_split,
    collate,
    fit_to_length,
    load_streams,
    val_batches,
)
from dmlm.model.sequence import SequenceSettings, arranged, check_lengths, loss_variant, sequence_length
from dmlm.model.vocab import VocabLayout
from dmlm.storage import Ragged, atomic_path, write_table

STATE_FORMAT = "dmlm-train-state-1"
LOG_COLUMNS = ["step", "train_loss", "val_loss", "val_transcript_loss", "lr", "tokens_per_s", "elapsed_s"]


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
    seed: int = 0

    @classmethod
    def from_settings(cls, training: dict, seed: int) -> "TrainConfig":
        """From the config's ``training`` section (every key but ``seed`` required) and the run seed."""
        names = {f.name for f in fields(cls)} - {"seed"}
        values = {}
        for key in training:
            if key not in names:
                raise DmlmError(f"training.{key}: unknown key")
        for f in fields(cls):
            if f.name == "seed":
                continue
            if f.name not in training:
                raise DmlmError(f"training.{f.name} is missing")
            kind = int if f.type in ("int", int) else float
            try:
                value = kind(training[f.name])
            except (TypeError, ValueError):
                raise DmlmError(f"training.{f.name}: expected a number, got {training[f.name]!r}") from None
            if kind is int and value != training[f.name]:
                raise DmlmError(f"training.{f.name}: expected an integer, got {training[f.name]!r}")
            values[f.name] = value
        cfg = cls(**values, seed=int(seed))
        for key in ("max_steps", "batch_size", "eval_every", "val_batches", "lr"):
            if not getattr(cfg, key) > 0:
                raise DmlmError(f"training.{key} must be positive, got {getattr(cfg, key)}")
        for key in ("warmup_steps", "weight_decay", "grad_clip"):
            if not getattr(cfg, key) >= 0:
                raise DmlmError(f"training.{key} must be >= 0, got {getattr(cfg, key)}")
        if not 0.0 <= cfg.min_lr_ratio <= 1.0:
            raise DmlmError(f"training.min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
        return cfg

    def lr_at(self, step: int) -> float:
        """Learning rate of (1-based) ``step``: linear warm-up, then cosine to min_lr_ratio * lr."""
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        min_lr = self.lr * self.min_lr_ratio
        ratio = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, ratio))) * (self.lr - min_lr)


# -- settings ---------------------------------------------------------------------------------
def check_loss_weights(loss_weights: dict, modalities, set_name: str = "<set>") -> dict[str, float]:
    """The weights the run needs (its modalities and ``transcript``), as floats >= 0."""
    out = {}
    for key in [*modalities, "transcript"]:
        if key not in loss_weights:
            raise DmlmError(f"loss_weights.{set_name}.{key} is missing")
        try:
            value = float(loss_weights[key])
        except (TypeError, ValueError):
            raise DmlmError(f"loss_weights.{set_name}.{key}: expected a number, got {loss_weights[key]!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise DmlmError(f"loss_weights.{set_name}.{key} must be a number >= 0, got {loss_weights[key]!r}")
        out[key] = value
    if not any(out.values()):
        raise DmlmError(f"loss_weights.{set_name}: all weights are 0, nothing to train")
    return out


def _require(settings: dict, key: str):
    if key not in settings:
        raise DmlmError(f"settings: missing key {key!r}")
    return settings[key]


# -- data -------------------------------------------------------------------------------------
def _fingerprint(settings: dict, streams: dict[str, dict[str, Ragged]], layout: VocabLayout) -> str:
    h = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    h.update(str(layout.text_size).encode())
    if layout.is_native:
        h.update(json.dumps(layout.native, sort_keys=True).encode())
    for split in sorted(streams):
        for name in sorted(streams[split]):
            r = streams[split][name]
            h.update(f"{split}:{name}".encode())
            h.update(np.ascontiguousarray(r.offsets).tobytes())
            h.update(np.ascontiguousarray(r.data).tobytes())
    return h.hexdigest()


def token_losses(model, input_ids):
    """Cross-entropy of every target position (B, L-1): position t predicts input_ids[:, t+1].

    Right padding needs no attention mask: causal attention never lets a real token see the pads
    after it, and OPT's positions 0..L-1 are then right for every row."""
    import torch.nn.functional as F

    logits = model(input_ids=input_ids).logits[:, :-1]
    targets = input_ids[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return ce.view(targets.shape)


def weighted_loss(model, input_ids, weights):
    ce = token_losses(model, input_ids)
    w = weights[:, 1:]
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


def evaluate(model, seqs: Sequences, batches) -> tuple[float, float]:
    """(weighted loss, transcript-only loss) summed over ``batches`` (token-weighted)."""
    import torch

    was_training = model.training
    model.eval()
    wsum = wtot = tsum = tcount = 0.0
    with torch.no_grad():
        for idx in batches:
            ids, w, text = collate(seqs, idx)
            ce = token_losses(model, ids)
            w, text = w[:, 1:], text[:, 1:]
            wsum += float((ce * w).sum())
            wtot += float(w.sum())
            tsum += float((ce * text).sum())
            tcount += float(text.sum())
    model.train(was_training)
    return wsum / max(wtot, 1e-12), tsum / max(tcount, 1.0)


def make_optimizer(model, cfg: TrainConfig):
    """AdamW; no weight decay on biases, LayerNorms and embeddings (token + position)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "embed" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


# -- state ------------------------------------------------------------------------------------
def _save_state(path: Path, **state) -> None:
    import torch

    state = {"format": STATE_FORMAT, **state}
    state["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, fingerprint: str):
    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn file cannot happen (atomic), but a foreign one can
        print(f"dmlm train: ignoring unreadable state {path}: {err}", file=sys.stderr)
        return None
    if state.get("format") != STATE_FORMAT or state.get("fingerprint") != fingerprint:
        print(f"dmlm train: ignoring {path}: it belongs to other settings or data; starting afresh", file=sys.stderr)
        return None
    return state


# -- the run ----------------------------------------------------------------------------------
def train_run(
    settings: dict,
    streams: dict[str, dict[str, str]],
    tokenizer_json: str,
    out_dir: str,
    threads: int = 1,
    stop_after_step: int | None = None,
) -> dict | None:
    """Train one run; returns the last log row (None when stopped early by ``stop_after_step``).

    ``settings``: ``modalities`` (list, sequence order), ``vocab`` (codebook size per discrete
    modality), ``backbone`` (one ``backbones`` entry), ``backbone_name``, ``loss_weights`` (one
    set, optionally with its ``variant``), optional ``loss_weights_name`` (its name, for messages),
    optional ``sequence`` (``layout``, ``over_length``; ``sequence.SequenceSettings``), ``training``
    and ``seed``.
    ``streams``: ``{"train": {name: prefix}, "val": {...}}`` with a ragged int32 prefix per modality
    and ``"transcript"``. ``tokenizer_json``: the run's text tokenizer (the backbone's own for a
    pretrained backbone, whose native vocabulary layout the run then uses; see
    ``backbone.vocab_layout``). ``stop_after_step`` returns after that step as if the job were killed
    there (state only as of the last save); used to test resuming.
    """
    import torch
    from tqdm import tqdm

    from dmlm.cli import use_threads

    use_threads(threads)
    # validate everything before any work
    modalities = list(_require(settings, "modalities"))
    backbone_settings = dict(_require(settings, "backbone"))
    backbone_name = str(settings.get("backbone_name", "?"))
    backbones.get_family(backbone_settings.get("family"), backbone_name)
    loss_weights = check_loss_weights(
        _require(settings, "loss_weights"), modalities, str(settings.get("loss_weights_name", "<set>"))
    )
    cfg = TrainConfig.from_settings(dict(_require(settings, "training")), int(_require(settings, "seed")))
    # sequence assembly: layout, over-length policy, loss-weight variant (dmlm.model.sequence)
    seq_cfg = SequenceSettings.from_settings(settings.get("sequence"))
    variant = loss_variant(settings["loss_weights"], str(settings.get("loss_weights_name", "<set>")))
    for split in ("train", "val"):
        if split not in streams:
            raise DmlmError(f"no {split} streams given")
    layout = backbones.vocab_layout(
        backbone_settings, modalities, dict(settings.get("vocab", {})), tokenizer_json, backbone_name
    )
    layout = arranged(layout, seq_cfg.layout)
    ragged = {split: load_streams(split, streams[split], layout) for split in ("train", "val")}
    if not backbone_settings.get("pretrained"):
        limit = backbones.max_positions(backbone_settings, name=backbone_name)
        for split, rs in ragged.items():
            lengths = sequence_length({k: r.lengths() for k, r in rs.items()}, layout)
            check_lengths(lengths, limit, backbone_name, f"the {split} split", seq_cfg.over_length)

    out = Path(out_dir)
    state_path = out / "state" / "last.pt"
    log_path = out / "train_log.tsv"
    fingerprint = _fingerprint(settings, ragged, layout)

    train = assemble_split(ragged["train"], layout, loss_weights, variant)
    val = assemble_split(ragged["val"], layout, loss_weights, variant)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = backbones.build_backbone(backbone_settings, layout.vocab_size, backbone_name, layout)
    limit = backbones.max_positions(backbone_settings, model, backbone_name)
    train = fit_to_length(train, limit, backbone_name, "train", seq_cfg.over_length)
    val = fit_to_length(val, limit, backbone_name, "val", seq_cfg.over_length)
    model.train()
    optimizer = make_optimizer(model, cfg)
    order = BatchOrder(train.lengths, cfg.batch_size, cfg.seed)
    fixed_val = val_batches(val.lengths, cfg.batch_size, cfg.val_batches, cfg.seed)

    rows: list[dict] = []
    step, elapsed = 0, 0.0
    state = _load_state(state_path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, rows = state["step"], state["elapsed_s"], state["log"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        print(f"dmlm train: resuming {out} after step {step}", file=sys.stderr)

    t_start = time.perf_counter() - elapsed

    def log(step, train_loss, lr, tokens_per_s):
        val_loss, val_text = evaluate(model, val, fixed_val)
        rows.append(
            {
                "step": step,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_transcript_loss": val_text,
                "lr": lr,
                "tokens_per_s": tokens_per_s,
                "elapsed_s": round(time.perf_counter() - t_start, 3),
            }
        )
        write_table(log_path, [{k: r[k] for k in LOG_COLUMNS} for r in rows])
        return rows[-1]

    if step == 0:
        log(0, float("nan"), 0.0, float("nan"))

    loss_sum, loss_n, tokens, busy = 0.0, 0, 0, 0.0
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {out.name}", file=sys.stderr, mininterval=2.0)
    while step < cfg.max_steps:
        step += 1
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, w, _ = collate(train, order.batch(step))
        t0 = time.perf_counter()
        loss = weighted_loss(model, ids, w)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise DmlmError(f"training diverged at step {step} (loss {loss_value}); lower training.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        busy += time.perf_counter() - t0
        loss_sum += loss_value
        loss_n += 1
        tokens += int((ids != layout.pad).sum())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)

        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            row = log(step, loss_sum / loss_n, lr, round(tokens / max(busy, 1e-9), 1))
            bar.write(
                f"step {step}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                f"val transcript {row['val_transcript_loss']:.4f} ({row['tokens_per_s']:.0f} tok/s)",
                file=sys.stderr,
            )
            loss_sum, loss_n, tokens, busy = 0.0, 0, 0, 0.0
            epoch, index = order.position(step + 1)
            _save_state(
                state_path,
                fingerprint=fingerprint,
                step=step,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                data_position={"epoch": epoch, "batch": index},
                log=rows,
                elapsed_s=time.perf_counter() - t_start,
                config=asdict(cfg),
            )
        if stop_after_step is not None and step >= stop_after_step:
            bar.close()
            return None
    bar.close()

    model.eval()
    checkpoint.save(out / "checkpoint.pt", model, layout, settings)
    state_path.unlink(missing_ok=True)
    return rows[-1]
