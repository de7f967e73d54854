"""`dmlm corpus` (generate one split of 3-Equations) and `dmlm ocr` (OCR a split's images)."""

from __future__ import annotations

from dmlm.cli import add_common_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "corpus",
        help="generate one split of the 3-Equations corpus",
        description="Settings: the config's `corpus` section without `splits`, plus `seed`.",
    )
    p.add_argument("--split", required=True, help="split name (train, val, test, ...)")
    p.add_argument("--n", type=int, required=True, help="number of utterances")
    p.add_argument("--out-dir", required=True, help="folder for manifest.tsv, audio, lips, images.npy")
    add_common_args(p)
    p.set_defaults(func=_corpus)

    p = subparsers.add_parser(
        "ocr",
        help="OCR a split's images into ocr.tsv",
        description='Settings: {"engine": "tesseract" | "easyocr"} (corpus.ocr).',
    )
    p.add_argument("--images", required=True, help="images.npy of the split")
    p.add_argument("--manifest", required=True, help="manifest.tsv of the split (only `id` is read)")
    p.add_argument("--out", required=True, help="output ocr.tsv")
    add_common_args(p)
    p.set_defaults(func=_ocr)


def _corpus(args) -> None:
    from dmlm.corpus.build import build_split

    build_split(args.out_dir, args.split, args.n, args.settings, args.threads)


def _ocr(args) -> None:
    from dmlm.corpus.ocr import run_ocr

    settings = args.settings or {}
    run_ocr(args.images, args.manifest, args.out, engine=settings.get("engine", "tesseract"),
            threads=args.threads, model_dir=settings.get("model_dir"))
