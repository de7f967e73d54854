"""`dmlm evaluate`: decode a run's test split at one condition and score it."""

from __future__ import annotations


def register(subparsers) -> None:
    from dmlm.cli import add_common_args

    p = subparsers.add_parser("evaluate", help="greedy-decode the test split and compute WER")
    add_common_args(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--stream", action="append", default=[], metavar="NAME=PREFIX",
                   help="test token array per modality (repeat)")
    p.add_argument("--tokenizer", required=True, help="the run's text tokenizer.json (local or its backbone's)")
    p.add_argument("--manifest", required=True, help="test manifest.tsv (references)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--permute", metavar="MODALITY", default=None,
                   help="permute this modality's inputs across the test utterances (perceptual score; "
                        "the derangement's seed is the settings' permutation_seed)")
    p.set_defaults(func=run)


def run(args) -> None:
    from dmlm.errors import DmlmError
    from dmlm.evaluation.wer import evaluate_run

    streams = {}
    for item in args.stream:
        name, sep, prefix = item.partition("=")
        if not sep:
            raise DmlmError(f"--stream {item!r}: expected NAME=PREFIX")
        streams[name] = prefix
    if args.permute is not None and "permutation_seed" not in args.settings:
        raise DmlmError("--permute needs permutation_seed in --settings (config key evaluation.permutation_seed)")
    result = evaluate_run(args.checkpoint, streams, args.tokenizer, args.manifest, args.out_dir, args.settings,
                          permute=args.permute)
    what = f" with {args.permute} permuted" if args.permute else ""
    print(f"WER {result['wer']:.4f}{what} over {result['utterances']} utterances "
          f"({result['utterances_per_s']:.1f} utterances/s, {result['tokens_per_s']:.0f} tokens/s)")
