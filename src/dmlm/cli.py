"""`dmlm <command>`: one subcommand per stage function; Snakemake rules call these.

Each stage package has a ``cli.py`` with ``register(subparsers)``; its handlers import heavy
libraries (torch, transformers) inside the handler so that ``dmlm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys

from dmlm.errors import DmlmError

STAGE_CLIS = (
    "dmlm.corpus.cli",
    "dmlm.noise.cli",
    "dmlm.tokens.cli",
    "dmlm.model.cli",
    "dmlm.evaluation.cli",
    "dmlm.report.cli",
    "dmlm.config",  # check-config
)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--settings (the JSON of exactly the config values the stage uses) and --threads."""
    parser.add_argument("--settings", type=json.loads, default={}, help="stage settings as JSON")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (Snakemake's `threads`)")


def use_threads(n: int) -> None:
    """Give torch and BLAS exactly the threads Snakemake gave the job (oversubscribing 2 cores
    with OpenMP threads was measured 3-8x slower)."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in STAGE_CLIS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "threads"):
        use_threads(args.threads)
    try:
        args.func(args)
    except DmlmError as err:
        print(f"dmlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
