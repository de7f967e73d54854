"""Training throughput: our training step against a plain loop, and Mamba against OPT, on real tokens.

    PYTHONPATH=src .venv/bin/python bench/bench_train.py [--results results]
    PYTHONPATH=src .venv/bin/python bench/bench_train.py --modalities audio,image --steps 40

Reads (never writes) a finished default-preset ``results`` folder: the training split's token
streams (``tokens/{dataset}/...``; audio of the ``--train-cond`` condition), the codebooks (their
vocabulary sizes) and the local text tokenizer, and assembles them with the run's own code
(``vocab``, ``sequence``, ``batches``). Backbones, batch size and lr come from ``--config``
(default ``workflow_config.yaml``: ``opt-small``, ``mamba-small``, ``training``).

Every variant trains a copy of the same initial model with the same AdamW, clipping, batch size,
threads and dtype (fp32 on the CPU) and reports tokens per second of real (non-pad) tokens:

- ``plain``: the usual loop: batches of a plain shuffle, padded to their longest sequence,
  ``model(input_ids).logits`` over every position, fp32 cross-entropy, weights applied afterwards
  (no attention mask: right padding needs none; ``plain+mask`` passes the usual one);
- ``plain+bucketing``: the same step on our length-bucketed batch order (``batches.BatchOrder``);
- ``plain+selected``: shuffled batches, our step (``objective.train_step``: output layer and
  cross-entropy only where the loss weight is non-zero, i.e. not on padding);
- ``ours``: both, i.e. what ``dmlm train`` runs.

Then ``ours`` for ``--mamba`` against ``--opt`` (equal parameter counts in the default config), and
with ``--scans`` the same Mamba on ``mamba_scan``'s PyTorch scan (what runs where no C compiler
works) and on transformers' own scan (mambapy's) instead of the fused C scan.
Variants run interleaved, one step each in turn, for ``--steps`` timed steps (after ``--warmup``
untimed ones): on a shared machine the load drifts, and this way every variant sees the same.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
STREAM_DIRS = {  # default preset names: encoder folders under tokens/{dataset}/{modality}/
    "audio": "audio/mfcc/{cond}",
    "lips": "lips/pixels",
    "image": "image/patches",
    "ocr": "ocr/local",
    "transcript": "transcript/local",
}
CODEBOOKS = {"audio": "audio/mfcc.npz", "lips": "lips/pixels.npz", "image": "image/patches.npz"}


def real_layout(results: Path, dataset: str, modalities: list[str]):
    """The local vocabulary layout of a finished results folder (its codebooks and text tokenizer)."""
    from dmlm.model.vocab import VocabLayout
    from dmlm.tokens.registry import describe

    codebooks = {m: int(describe(results / "codebooks" / dataset / p)["vocab_size"]) for m, p in CODEBOOKS.items()}
    tokenizer = results / "tokens" / dataset / "text" / "local" / "tokenizer.json"
    return VocabLayout.from_tokenizer(modalities, codebooks, str(tokenizer))


def real_streams(results: Path, dataset: str, split: str, names: list[str], cond: str):
    """``{name: Ragged}`` of a split of a finished results folder (read only)."""
    from dmlm.storage import Ragged

    tokens = results / "tokens" / dataset
    return {name: Ragged.load(str(tokens / STREAM_DIRS[name].format(cond=cond) / split)) for name in names}


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, default=ROOT / "results", help="a finished results folder (read only)")
    p.add_argument("--dataset", default="3eq")
    p.add_argument("--modalities", default="audio", help="comma-separated, in sequence order (default: audio)")
    p.add_argument("--config", type=Path, default=ROOT / "workflow_config.yaml")
    p.add_argument("--threads", type=int, default=1)


def plain_step(model, optimizer, ids, w, grad_clip: float, mask: bool = False) -> float:
    """The usual step: logits everywhere, fp32 cross-entropy, weighted afterwards (``mask``: with the
    attention mask a padded batch usually carries; right padding does not need it)."""
    import torch
    import torch.nn.functional as F

    extra = {"attention_mask": (ids != model.config.pad_token_id).long()} if mask else {}
    logits = model(input_ids=ids, use_cache=False, **extra).logits[:, :-1]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none")
    wt = w[:, 1:].reshape(-1)
    loss = (ce * wt).sum() / wt.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def shuffled_batches(n: int, batch_size: int, seed: int):
    """Batches of a plain shuffle, epoch after epoch (no length bucketing)."""
    epoch = 0
    while True:
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        yield from (perm[i : i + batch_size] for i in range(0, n, batch_size))
        epoch += 1


def bucketed_batches(lengths, batch_size: int, seed: int):
    from dmlm.model.batches import BatchOrder

    order, step = BatchOrder(lengths, batch_size, seed), 0
    while True:
        step += 1
        yield order.batch(step)


class Variant:
    """One model + optimizer + batch stream + step function; counts real tokens and busy seconds."""

    def __init__(self, name, model, seqs, batches, use_ours: bool, cfg, scan=None, mask: bool = False):
        import torch

        from dmlm.model.objective import make_optimizer

        self.name, self.model, self.seqs, self.batches, self.use_ours, self.cfg = name, model, seqs, batches, use_ours, cfg
        self.scan = scan  # a Mamba selective scan to use instead of the installed one
        self.mask = mask
        self.optimizer = make_optimizer(model, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr
        self.device = torch.device("cpu")
        self.tokens = self.cells = 0
        self.busy = 0.0

    def step(self, timed: bool = True) -> None:
        from dmlm.model.batches import collate
        from dmlm.model.objective import train_step

        from transformers.models.mamba import modeling_mamba

        ids, w, _ = collate(self.seqs, next(self.batches))
        installed = modeling_mamba.mamba_selective_scan
        modeling_mamba.mamba_selective_scan = self.scan or installed
        t0 = time.perf_counter()
        try:
            if self.use_ours:
                train_step(self.model, self.optimizer, [(ids, w)], self.cfg.grad_clip, self.device)
            else:
                plain_step(self.model, self.optimizer, ids, w, self.cfg.grad_clip, self.mask)
        finally:
            modeling_mamba.mamba_selective_scan = installed
        if timed:
            self.busy += time.perf_counter() - t0
            self.tokens += int((ids != self.seqs.pad).sum())
            self.cells += ids.numel()

    @property
    def rate(self) -> float:
        return self.tokens / self.busy

    @property
    def padding(self) -> float:
        return 1 - self.tokens / self.cells


def interleaved(variants, steps: int, warmup: int) -> None:
    """Step every variant in turn (rotating who goes first), so that all see the same load."""
    for v in variants:
        for _ in range(warmup):
            v.step(timed=False)
    for s in range(steps):
        k = s % len(variants)
        for v in variants[k:] + variants[:k]:
            v.step()
        if (s + 1) % 10 == 0:
            print(f"  {s + 1} steps: " + ", ".join(f"{v.name} {v.rate:.0f}" for v in variants), file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--train-cond", default="mix-mix", help="audio condition of the training split")
    p.add_argument("--opt", default="opt-small", help="OPT backbone of --config")
    p.add_argument("--mamba", default="mamba-small", help="Mamba backbone of --config")
    p.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--scans", action="store_true", help="also time Mamba on our PyTorch scan and on mambapy's")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch

    from dmlm.cli import use_threads
    from dmlm.model.backbone import build_backbone
    from dmlm.model.batches import assemble_split
    from dmlm.model.trainconfig import TrainConfig

    use_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    cfg = TrainConfig.from_settings(config["training"], args.seed)
    weights = next(iter(config["loss_weights"].values()))
    modalities = args.modalities.split(",")
    layout = real_layout(args.results, args.dataset, modalities)
    streams = real_streams(args.results, args.dataset, "train", [*modalities, "transcript"], args.train_cond)
    seqs = assemble_split(streams, layout, weights)
    print(
        f"data: {len(seqs)} training sequences ({'+'.join(modalities)}), length {seqs.lengths.min()}.."
        f"{seqs.lengths.max()} (median {int(np.median(seqs.lengths))}), vocabulary {layout.vocab_size}; "
        f"batch {cfg.batch_size}, {args.threads} thread(s), fp32, torch {torch.__version__}",
    )

    def model_of(name):
        torch.manual_seed(args.seed)
        m = build_backbone(config["backbones"][name], layout.vocab_size, name, layout).train()
        return m, sum(p.numel() for p in m.parameters())

    opt_model, opt_params = model_of(args.opt)
    n, bs = len(seqs), cfg.batch_size
    variants = [
        Variant("plain", copy.deepcopy(opt_model), seqs, shuffled_batches(n, bs, args.seed), False, cfg),
        Variant("plain+mask", copy.deepcopy(opt_model), seqs, shuffled_batches(n, bs, args.seed), False, cfg, mask=True),
        Variant("plain+bucketing", copy.deepcopy(opt_model), seqs, bucketed_batches(seqs.lengths, bs, args.seed), False, cfg),
        Variant("plain+selected", copy.deepcopy(opt_model), seqs, shuffled_batches(n, bs, args.seed), True, cfg),
        Variant("ours", copy.deepcopy(opt_model), seqs, bucketed_batches(seqs.lengths, bs, args.seed), True, cfg),
    ]
    mamba_model, mamba_params = model_of(args.mamba)
    mamba = Variant(f"ours ({args.mamba})", mamba_model, seqs, bucketed_batches(seqs.lengths, bs, args.seed), True, cfg)
    extra = []
    if args.scans:  # the same Mamba step on the other scans: ours in PyTorch, transformers' with mambapy
        from dmlm.model import mamba_scan

        scans = [("our PyTorch scan", mamba_scan.pytorch_selective_scan), ("mambapy's scan", mamba_scan.reference())]
        extra = [
            Variant(name, copy.deepcopy(mamba_model), seqs, bucketed_batches(seqs.lengths, bs, args.seed), True, cfg, scan)
            for name, scan in scans
        ]
    interleaved([*variants, mamba, *extra], args.steps, args.warmup)

    base = variants[0].rate
    print(f"\n(1) training step, {args.opt} ({opt_params / 1e6:.2f}M parameters), {args.steps} interleaved steps each")
    print(f"{'variant':<18}{'real tokens/s':>14}{'padding':>9}{'vs plain':>10}")
    for v in variants:
        print(f"{v.name:<18}{v.rate:>14.0f}{v.padding:>9.1%}{v.rate / base:>9.2f}x")
    print("\n(3) Mamba vs OPT on the CPU, our step, equal size")
    print(f"{args.opt:<14}{opt_params / 1e6:>6.2f}M {variants[-1].rate:>8.0f} tokens/s")
    print(f"{args.mamba:<14}{mamba_params / 1e6:>6.2f}M {mamba.rate:>8.0f} tokens/s")
    print(f"OPT / Mamba: {variants[-1].rate / mamba.rate:.2f}x")
    for v in extra:
        print(f"{args.mamba} on {v.name}: {v.rate:.0f} tokens/s (the fused C scan {mamba.rate / v.rate:.2f}x faster)")


if __name__ == "__main__":
    main()
