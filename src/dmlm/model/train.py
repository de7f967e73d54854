"""Train one DMLM run: assembled multimodal sequences -> a causal LM (nanoGPT-style loop).

``train_run`` reads ragged token streams, assembles every utterance (``batches``, ``sequence.assemble``),
checks lengths against the backbone, and trains with AdamW, linear warm-up then cosine decay to
``min_lr_ratio * lr``, gradient clipping and accumulation (``objective.train_step``), on the
configured device and precision (``device``), in length-bucketed batches (``batches.BatchOrder``).
The loss of a batch is ``sum(weight * CE) / sum(weight)`` over its target positions (padding
weighs 0). The recipe is ``training`` (``trainconfig.TrainConfig``).

Validation every ``eval_every`` steps tracks the best ``early_stop_metric``; with
``early_stop_patience`` > 0 training stops after that many evaluations in a row without a better
one. The final checkpoint always holds the weights of the best evaluation.

Files in ``out_dir``:

- ``train_log.tsv``: one row at step 0 and every ``eval_every`` steps and at the end: ``step``,
  ``train_loss`` (mean since the previous row), ``val_loss`` (the weighted loss),
  ``val_transcript_loss`` (plain CE over transcript tokens and ``</s>``), ``lr``,
  ``tokens_per_s`` (non-pad tokens per second of training since the previous row) and
  ``elapsed_s`` (wall time, summed over resumed attempts).
- ``state/last.pt``: written every ``eval_every`` steps (model, optimizer, step, RNG states, data
  position, log rows, the best evaluation so far with its weights and the early-stopping count).
  A rerun with the same settings and data resumes from it, bit-exactly on the CPU: the batch order
  is a pure function of (seed, step), the schedule of the step, and all RNG states are restored.
  A state from other settings or data is ignored (a note goes to stderr). It is deleted once
  ``checkpoint.pt`` is written. Its sidecar ``last.pt.sha256`` is checked before resuming: a state
  whose bytes changed stops training with an error; one without a sidecar is ignored.
- ``checkpoint.pt``: the best model (``checkpoint.save``; its ``training`` entry names the step).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict
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
    dropped_rows,
    fit_to_length,
    load_streams,
    val_batches,
)
from dmlm.model.device import check_family_device, resolve_device, resolve_precision
from dmlm.model.objective import evaluate, make_optimizer, token_losses, train_step, weighted_loss
from dmlm.model.sequence import SequenceSettings, arranged, check_lengths, loss_variant, sequence_length
from dmlm.model.trainconfig import TrainConfig
from dmlm.model.vocab import VocabLayout
from dmlm.checksums import ChecksumMissing, save_torch, sidecar, verify
from dmlm.storage import Ragged, write_table

__all__ = [
    "TrainConfig",
    "Sequences",
    "assemble_split",
    "collate",
    "evaluate",
    "make_optimizer",
    "token_losses",
    "train_step",
    "train_run",
    "weighted_loss",
]

STATE_FORMAT = "dmlm-train-state-2"
LOG_COLUMNS = ["step", "train_loss", "val_loss", "val_transcript_loss", "lr", "tokens_per_s", "elapsed_s"]


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


# -- state ------------------------------------------------------------------------------------
def _save_state(path: Path, **state) -> None:
    import torch

    state = {"format": STATE_FORMAT, **state}
    state["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    save_torch(state, path)


def _load_state(path: Path, fingerprint: str):
    import torch

    if not path.exists():
        return None
    try:
        verify(path)  # a changed byte is an error: resuming from it would give wrong weights silently
    except ChecksumMissing as err:  # an interrupted write, or an older version's state
        print(f"dmlm train: ignoring state: {err}", file=sys.stderr)
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
    there (state only as of the last save); used to test resuming. ``threads``: torch's CPU threads
    (the Snakemake rule's ``threads``).
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
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    check_family_device(backbone_settings.get("family"), device, backbone_name)
    for split in ("train", "val"):
        if split not in streams:
            raise DmlmError(f"no {split} streams given")
    layout = backbones.vocab_layout(
        backbone_settings, modalities, dict(settings.get("vocab", {})), tokenizer_json, backbone_name
    )
    layout = arranged(layout, seq_cfg.layout)
    ragged = {split: load_streams(split, streams[split], layout) for split in ("train", "val")}
    limit = None if backbone_settings.get("pretrained") else backbones.max_positions(backbone_settings, name=backbone_name)
    if limit is not None:  # None: a pretrained folder decides (checked below), or Mamba without a limit
        for split, rs in ragged.items():
            lengths = sequence_length({k: r.lengths() for k, r in rs.items()}, layout)
            check_lengths(lengths, limit, backbone_name, f"the {split} split", seq_cfg.over_length)

    out = Path(out_dir)
    state_path = out / "state" / "last.pt"
    log_path = out / "train_log.tsv"
    fingerprint = _fingerprint(settings, ragged, layout)

    # modality dropout needs another input to read when the audio is left out
    drop = "audio" if cfg.drop_audio > 0 and "audio" in modalities and len(modalities) > 1 else None
    if cfg.drop_audio > 0 and drop is None:
        print(f"dmlm train: training.drop_audio = {cfg.drop_audio} ignored: audio is not beside another input", file=sys.stderr)
    train = assemble_split(ragged["train"], layout, loss_weights, variant, drop=drop)
    val = assemble_split(ragged["val"], layout, loss_weights, variant)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    model = backbones.build_backbone(backbone_settings, layout.vocab_size, backbone_name, layout)
    limit = backbones.max_positions(backbone_settings, model, backbone_name)
    if limit is not None:  # None: Mamba without a configured limit
        train = fit_to_length(train, limit, backbone_name, "train", seq_cfg.over_length)
        val = fit_to_length(val, limit, backbone_name, "val", seq_cfg.over_length)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    order = BatchOrder(train.lengths, cfg.batch_size, cfg.seed)
    fixed_val = val_batches(val.lengths, cfg.batch_size, cfg.val_batches, cfg.seed)

    rows: list[dict] = []
    best = None  # {"step", "metric", "bad" (evaluations since), "model" (CPU weights)}
    step, elapsed = 0, 0.0
    state = _load_state(state_path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, rows, best = state["step"], state["elapsed_s"], state["log"], state["best"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        print(f"dmlm train: resuming {out} after step {step}", file=sys.stderr)

    t_start = time.perf_counter() - elapsed

    def log(step, train_loss, lr, tokens_per_s):
        nonlocal best
        val_loss, val_text = evaluate(model, val, fixed_val, device, precision)
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
        metric = rows[-1][cfg.early_stop_metric]
        if best is None or metric < best["metric"]:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = {"step": step, "metric": metric, "bad": 0, "model": weights}
        else:
            best["bad"] += 1
        return rows[-1]

    if step == 0:
        log(0, float("nan"), 0.0, float("nan"))

    print(
        f"dmlm train: {out.name} on {device.type} ({precision}), steps {step + 1}..{cfg.max_steps}, "
        f"{cfg.grad_accum} x {cfg.batch_size} sequences a step",
        file=sys.stderr,
    )
    loss_sum, loss_n, tokens, busy = 0.0, 0, 0, 0.0
    stopped_early, first = False, True
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {out.name}", file=sys.stderr, mininterval=2.0)
    while step < cfg.max_steps and not stopped_early:
        step += 1
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = []
        for k in range(cfg.grad_accum):
            micro_step = (step - 1) * cfg.grad_accum + k + 1
            idx = order.batch(micro_step)
            dropped = dropped_rows(len(idx), cfg.drop_audio_at(step), cfg.seed, micro_step) if drop else None
            ids, w, _ = collate(train, idx, dropped)
            micro.append((ids, w))
            tokens += int((ids != layout.pad).sum())
        t0 = time.perf_counter()
        try:
            loss_value = train_step(model, optimizer, micro, cfg.grad_clip, device, precision)
        except DmlmError as err:
            raise DmlmError(f"step {step}: {err}") from None
        busy += time.perf_counter() - t0
        loss_sum += loss_value
        loss_n += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", refresh=False)
        if first:  # what a resumed attempt did first (the resume test reads it)
            bar.write(f"dmlm train: first step of this attempt: {step}", file=sys.stderr)
            first = False

        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            row = log(step, loss_sum / loss_n, lr, round(tokens / max(busy, 1e-9), 1))
            bar.write(
                f"step {step}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                f"val transcript {row['val_transcript_loss']:.4f} ({row['tokens_per_s']:.0f} tok/s)",
                file=sys.stderr,
            )
            loss_sum, loss_n, tokens, busy = 0.0, 0, 0, 0.0
            stopped_early = 0 < cfg.early_stop_patience <= best["bad"]
            epoch, index = order.position(step * cfg.grad_accum + 1)
            _save_state(
                state_path,
                fingerprint=fingerprint,
                step=step,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                data_position={"epoch": epoch, "batch": index},
                log=rows,
                best=best,
                elapsed_s=time.perf_counter() - t_start,
                config=asdict(cfg),
            )
        if stop_after_step is not None and step >= stop_after_step:
            bar.close()
            return None
    bar.close()

    if stopped_early:
        print(
            f"dmlm train: early stop after step {step}: no better {cfg.early_stop_metric} in "
            f"{best['bad']} evaluations",
            file=sys.stderr,
        )
    print(
        f"dmlm train: checkpoint = step {best['step']} ({cfg.early_stop_metric} {best['metric']:.4f})",
        file=sys.stderr,
    )
    model.load_state_dict(best["model"])
    model.eval()
    summary = {"best_step": best["step"], "metric": cfg.early_stop_metric, "value": best["metric"], "last_step": step}
    checkpoint.save(out / "checkpoint.pt", model, layout, settings, training=summary)
    state_path.unlink(missing_ok=True)
    sidecar(state_path).unlink(missing_ok=True)
    return rows[-1]
