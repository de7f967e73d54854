"""`dmlm train`: train one run (see ``dmlm.model.train.train_run``)."""

from __future__ import annotations

import argparse

from dmlm.cli import add_common_args
from dmlm.errors import DmlmError


def parse_streams(specs: list[str]) -> dict[str, dict[str, str]]:
    """``["train:audio=results/tokens/...", ...]`` -> ``{"train": {"audio": "results/tokens/..."}}``."""
    streams: dict[str, dict[str, str]] = {}
    for spec in specs or []:
        head, sep, prefix = spec.partition("=")
        split, colon, name = head.partition(":")
        if not (sep and colon and split and name and prefix):
            raise DmlmError(f"--stream {spec!r}: expected SPLIT:NAME=PREFIX, e.g. train:audio=results/tokens/...")
        if name in streams.setdefault(split, {}):
            raise DmlmError(f"--stream {split}:{name} given twice")
        streams[split][name] = prefix
    return streams


def codebook_sizes(specs: list[str]) -> dict[str, int]:
    """``["audio=results/codebooks/.../mfcc.npz"]`` -> ``{"audio": 128}`` (each tokenizer's vocabulary).

    A codebook's ids lie in ``range(n_units)`` whatever its encoder, so this reads the codebook
    alone: dispatching through ``dmlm.tokens.registry.describe`` would put every encoder module in the
    train rule's code fingerprint, and adding or editing an encoder would retrain every run."""
    from dmlm.tokens.codebook import Codebook

    sizes = {}
    for spec in specs or []:
        modality, sep, path = spec.partition("=")
        if not (sep and modality and path):
            raise DmlmError(f"--codebook {spec!r}: expected MODALITY=PATH")
        sizes[modality] = int(Codebook.load(path).n_units)
    return sizes


def _train(args: argparse.Namespace) -> None:
    from dmlm.model.train import train_run

    settings = dict(args.settings)
    settings["vocab"] = {**settings.get("vocab", {}), **codebook_sizes(args.codebook)}
    train_run(settings, parse_streams(args.stream), args.tokenizer, args.out_dir, threads=args.threads)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one DMLM run (writes checkpoint.pt, train_log.tsv; resumes from state/last.pt)",
        description=(
            "Train one run. --settings holds modalities, encoders, backbone, "
            "backbone_name, loss_weights (one set), loss_weights_name, training and seed."
        ),
    )
    add_common_args(p)
    p.add_argument(
        "--stream",
        action="append",
        default=[],
        metavar="SPLIT:NAME=PREFIX",
        help="a ragged token stream; SPLIT is train or val, NAME a modality or 'transcript' (repeatable)",
    )
    p.add_argument(
        "--codebook",
        action="append",
        default=[],
        metavar="MODALITY=PATH",
        help="the fitted tokenizer of a discrete modality; its vocabulary size sizes the LM's id range",
    )
    p.add_argument("--tokenizer", required=True, help="the text tokenizer.json")
    p.add_argument("--out-dir", required=True, help="the run folder (results/runs/{run})")
    p.set_defaults(func=_train)
