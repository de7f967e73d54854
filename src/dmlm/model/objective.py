"""The training objective and one optimizer step.

The loss of a batch is ``sum(weight * CE) / sum(weight)`` over its target positions (padding weighs
0). Only positions with a non-zero weight (or that an evaluation asks for) go through the output
layer and the cross-entropy: the backbone's hidden states are gathered at those positions first,
so padding and zero-weighted modality tokens cost no vocabulary-sized logits (and, under bf16
autocast, no full-vocabulary fp32 upcast). The result is the same as the logits of the whole
batch, gathered afterwards.
"""

from __future__ import annotations

import math

from dmlm.errors import DmlmError
from dmlm.model.batches import Sequences, collate
from dmlm.model.device import autocast


def token_losses(model, input_ids, select=None):
    """Cross-entropy of target positions: position t predicts ``input_ids[:, t+1]``.

    Returns (B, L-1) for every position, or (N,) for the True entries of ``select`` (bool, B x L-1).
    Right padding needs no attention mask: causal attention (or Mamba's recurrence) never lets a
    real token see the pads after it, and OPT's positions 0..L-1 are then right for every row."""
    import torch.nn.functional as F

    hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
    targets = input_ids[:, 1:]
    if select is not None:
        hidden, targets = hidden[select], targets[select]
    logits = model.get_output_embeddings()(hidden)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return ce.view(targets.shape)


def weighted_loss(model, input_ids, weights, total_weight=None):
    """``sum(weight * CE) / total_weight`` (default: the batch's own weight sum)."""
    w = weights[:, 1:]
    select = w > 0
    ce = token_losses(model, input_ids, select)
    total = w.sum() if total_weight is None else total_weight
    return (ce * w[select]).sum() / total.clamp_min(1e-12)


def train_step(model, optimizer, micro_batches, grad_clip: float, device, precision: str = "fp32") -> float:
    """One optimizer step over ``micro_batches`` (a list of ``(input_ids, weights)`` CPU tensors):
    gradients accumulate over them with the loss normalised by their total weight, so the step
    equals one step on their union. Returns the loss; raises on a non-finite loss (nothing applied)."""
    import torch

    total = sum(w[:, 1:].sum() for _, w in micro_batches).to(device)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for ids, w in micro_batches:
        ids, w = ids.to(device, non_blocking=True), w.to(device, non_blocking=True)
        with autocast(device, precision):
            loss = weighted_loss(model, ids, w, total)
        loss.backward()
        loss_sum += loss.detach()
    value = float(loss_sum)
    if not math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        raise DmlmError(f"training diverged (loss {value}); lower training.lr")
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return value


def evaluate(model, seqs: Sequences, batches, device=None, precision: str = "fp32") -> tuple[float, float]:
    """(weighted loss, transcript-only loss) summed over ``batches`` (token-weighted)."""
    import torch

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    wsum = wtot = tsum = tcount = 0.0
    with torch.no_grad():
        for idx in batches:
            ids, w, text = (t.to(device) for t in collate(seqs, idx))
            w, text = w[:, 1:], text[:, 1:]
            select = (w > 0) | text
            with autocast(device, precision):
                ce = token_losses(model, ids, select)
            wsum += float((ce * w[select]).sum())
            wtot += float(w.sum())
            tsum += float((ce * text[select]).sum())
            tcount += float(text.sum())
    model.train(was_training)
    return wsum / max(wtot, 1e-12), tsum / max(tcount, 1.0)


def make_optimizer(model, cfg):
    """AdamW; no weight decay on biases, norms, embeddings (token + position) and Mamba's A_log and D
    (as in the Mamba reference). Fused on CUDA."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        keep = p.dim() < 2 or "embed" in name or name.endswith(("A_log", ".D"))
        (no_decay if keep else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True if cuda else None)
