"""`dmlm fit-codebook | encode | text-tokenizer | encode-text | describe-tokens`: the tokens stage."""

from __future__ import annotations

import argparse

from dmlm.cli import add_common_args

MODALITIES = ("audio", "lips", "image")


def _fit_codebook(args: argparse.Namespace) -> None:
    from dmlm.tokens.registry import fit_codebook

    fit_codebook(args.modality, args.settings, args.media, args.out)


def _encode(args: argparse.Namespace) -> None:
    from dmlm.tokens.registry import encode_media

    encode_media(args.modality, args.codebook, args.media, args.out_prefix)


def _text_tokenizer(args: argparse.Namespace) -> None:
    from dmlm.errors import DmlmError
    from dmlm.tokens.text import copy_pretrained_tokenizer, train_text_tokenizer

    settings = args.settings
    if settings.get("pretrained"):
        copy_pretrained_tokenizer(settings["pretrained"], args.out, settings.get("backbone", "?"))
    elif args.manifest is None:
        raise DmlmError("text-tokenizer: --manifest is required to train the local tokenizer")
    else:
        train_text_tokenizer(args.manifest, args.ocr, args.out, settings)


def _encode_text(args: argparse.Namespace) -> None:
    from dmlm.tokens.text import encode_table

    encode_table(args.tokenizer, args.table, args.column, args.out_prefix)


def _describe(args: argparse.Namespace) -> None:
    import json

    from dmlm.tokens.registry import describe

    print(json.dumps(describe(args.path), sort_keys=True))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit-codebook",
        help="fit a k-means codebook for one modality",
        description="settings: the config's tokens.<modality> plus seed (and sample_rate for audio)",
    )
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--media", required=True, help="ragged prefix (audio, lips) or images.npy (image)")
    p.add_argument("--out", required=True, help="codebook .npz")
    add_common_args(p)
    p.set_defaults(func=_fit_codebook)

    p = subparsers.add_parser("encode", help="encode media into unit ids with a fitted codebook")
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--codebook", required=True, help="codebook .npz (carries its settings)")
    p.add_argument("--media", required=True, help="ragged prefix (audio, lips) or images.npy (image)")
    p.add_argument("--out-prefix", required=True, help="ragged int32 output prefix")
    add_common_args(p)
    p.set_defaults(func=_encode)

    p = subparsers.add_parser(
        "text-tokenizer",
        help="train the local WordLevel text tokenizer, or copy a pretrained backbone's",
        description=(
            "settings: the config's tokens.text (min_frequency) to train the local tokenizer on "
            "transcripts + OCR; or {backbone: NAME, pretrained: FOLDER} to copy that folder's tokenizer.json"
        ),
    )
    p.add_argument("--manifest", default=None, help="train manifest.tsv (column transcript); local tokenizer only")
    p.add_argument("--ocr", default=None, help="train ocr.tsv (column ocr)")
    p.add_argument("--out", required=True, help="tokenizer.json")
    add_common_args(p)
    p.set_defaults(func=_text_tokenizer)

    p = subparsers.add_parser("encode-text", help="encode one text column of a table into ids")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json")
    p.add_argument("--table", required=True, help="TSV table")
    p.add_argument("--column", required=True, help="column to encode (transcript, ocr)")
    p.add_argument("--out-prefix", required=True, help="ragged int32 output prefix")
    add_common_args(p)
    p.set_defaults(func=_encode_text)

    p = subparsers.add_parser(
        "describe-tokens",
        help="print a codebook's or text tokenizer's vocabulary size and frame rate (JSON)",
    )
    p.add_argument("path", help="codebook .npz or tokenizer.json")
    p.set_defaults(func=_describe)
