"""`dmlm noise-bank` and `dmlm mix`."""

from __future__ import annotations

import sys

from dmlm.cli import add_common_args

SAMPLE_RATE = 16000


def _noise_bank(args) -> None:
    from dmlm.noise.bank import build_bank

    from dmlm.storage import read_table

    sources = build_bank(args.settings, args.out_prefix)
    seconds = sum(s for _, _, s in sources)
    table = read_table(f"{args.out_prefix}.tsv")
    rates = table["orig_sr"].astype(int)
    resampled = rates[(rates > 0) & (rates != SAMPLE_RATE)]
    by_rate = ", ".join(f"{n} at {r} Hz" for r, n in sorted(resampled.value_counts().items()))
    print(f"noise bank {args.out_prefix}: {len(sources)} sources, {seconds:.1f} s; "
          f"{len(resampled)} files resampled to {SAMPLE_RATE} Hz" + (f" ({by_rate})" if by_rate else ""),
          file=sys.stderr)


def _mix(args) -> None:
    from dmlm.noise.mix import mix_split

    summary = mix_split(args.corpus_dir, args.noise_prefix, args.out_prefix, args.settings)
    print(f"mix {args.out_prefix}: {summary['noisy']} of {summary['utterances']} utterances noised",
          file=sys.stderr)


def register(subparsers) -> None:
    p = subparsers.add_parser("noise-bank", help="build a noise bank (built-in or a MUSAN folder)")
    p.add_argument("--out-prefix", required=True, help="ragged array prefix; <prefix>.tsv lists the sources")
    add_common_args(p)
    p.set_defaults(func=_noise_bank)

    p = subparsers.add_parser("mix", help="mix noise into a corpus split at target SNRs")
    p.add_argument("--corpus-dir", required=True, help="folder with manifest.tsv and the ragged audio")
    p.add_argument("--noise-prefix", required=True, help="noise bank prefix (from noise-bank)")
    p.add_argument("--out-prefix", required=True, help="output ragged prefix; <prefix>.snr.tsv per utterance")
    add_common_args(p)
    p.set_defaults(func=_mix)
