"""Corpus generation throughput (utterances per second) and Tesseract OCR speed (images per second).

    .venv/bin/python bench/bench_corpus.py                 # preset `default`, n=32, 1 and 2 processes
    .venv/bin/python bench/bench_corpus.py --n 64 --threads 1 2 --ocr-n 32

Each row builds one split with ``dmlm.corpus.build.build_split`` (speech, lips, image, manifest,
the resume chunks and the final assembly: everything the `corpus` rule does) into a temporary
folder, then OCRs its images with ``dmlm.corpus.ocr.ocr_images``. "per process" divides by the
number of processes. Numbers depend on what else runs on the machine: run it on an idle one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def corpus_settings(preset: str) -> dict:
    path = ROOT / "workflow_config.yaml" if preset == "default" else ROOT / "presets" / f"{preset}.yaml"
    config = yaml.safe_load(path.read_text())
    return {"seed": config["seed"], **{k: config["corpus"][k] for k in ("image", "speech", "lips")}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", help="default (workflow_config.yaml) or presets/<name>.yaml")
    parser.add_argument("--n", type=int, default=32, help="utterances per generation run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="process counts to try")
    parser.add_argument("--ocr-n", type=int, default=32, help="images to OCR (0: skip OCR)")
    args = parser.parse_args(argv)

    from dmlm.corpus.build import build_split
    from dmlm.corpus.ocr import ocr_images

    settings = corpus_settings(args.preset)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_corpus."))
    try:
        last = None
        for threads in args.threads:
            out = tmp / f"t{threads}"
            t0 = time.perf_counter()
            manifest = build_split(out, "train", args.n, settings, threads=threads, progress=False)
            dt = time.perf_counter() - t0
            audio_s = float(manifest["duration"].sum())
            rows.append(("generate", threads, args.n, dt, args.n / dt, args.n / dt / threads,
                         f"{audio_s / dt:.1f}x real time"))
            last = out
        if args.ocr_n and shutil.which("tesseract"):
            images = np.load(last / "images.npy")
            images = np.concatenate([images] * (-(-args.ocr_n // len(images))))[: args.ocr_n]
            for threads in args.threads:
                t0 = time.perf_counter()
                ocr_images(images, "tesseract", threads=threads, progress=False)
                dt = time.perf_counter() - t0
                rows.append(("ocr tesseract", threads, len(images), dt, len(images) / dt,
                             len(images) / dt / threads, ""))
        elif args.ocr_n:
            print("tesseract not installed: OCR skipped", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"preset {args.preset}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} before the end")
    print(f"| {'stage':<14} | procs | items | seconds | items/s | items/s/proc | note |")
    print(f"|{'-' * 16}|-------|-------|---------|---------|--------------|------|")
    for stage, threads, n, dt, rate, per, note in rows:
        print(f"| {stage:<14} | {threads:>5} | {n:>5} | {dt:>7.1f} | {rate:>7.2f} | {per:>12.2f} | {note} |")


if __name__ == "__main__":
    main()
