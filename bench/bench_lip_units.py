"""How much of what the lips show do lip units keep? Each lip tokenizer against the renderer's
visemes, side by side.

Fits each configuration's codebook on the fit split's frames and encodes the evaluation split
(repeats kept, so units and frames align); the label of a unit is the viseme at its frames'
centres (for ``frame_stack`` k, the most frequent of its k frames, as the viseme oracle does).
Prints, per configuration: normalised mutual information (NMI) between units and visemes,
purity (each unit's most frequent viseme, pooled), and the majority-class purity as the floor.
The viseme oracle itself scores 1.0 by construction: it is the ceiling these approach. The lip
reader (``lip_reader``, dmlm.tokens.lipreader) learns the fit split's frame visemes and names them
on the evaluation split from pixels alone: what a trained lip-reading front end keeps.

    .venv/bin/python bench/bench_lip_units.py [--corpus results/corpus/3eq] [--units 64] [--only "lip reader"]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from dmlm.tokens import lipreader, lips, visemes

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> pixel_kmeans settings beside n_units, fit_frames and seed
    "pixels 22x22": {"features": "pixels", "downsample": 22},
    "pixels 22x22, 2 stacked (default)": {"features": "pixels", "downsample": 22, "frame_stack": 2},
    "pixels 11x11, 2 stacked": {"features": "pixels", "downsample": 11, "frame_stack": 2},
    "dct 8x8": {"features": "dct", "dct_size": 8},
    "dct 8x8, 2 stacked": {"features": "dct", "dct_size": 8, "frame_stack": 2},
    "dct 12x12, 2 stacked": {"features": "dct", "dct_size": 12, "frame_stack": 2},
    # trained on the fit split's frame visemes (15 units whatever --units says)
    "lip reader 22x22, +-2 frames": {"encoder": "lip_reader", "downsample": 22},
    "lip reader, 2 stacked": {"encoder": "lip_reader", "downsample": 22, "frame_stack": 2},
}
MODULES = {"pixel_kmeans": lips, "lip_reader": lipreader}


def viseme_labels(split: Path, stack: int) -> np.ndarray:
    """The viseme of each (stacked) frame of the split, in encoding order: the viseme oracle's
    tokens with repeats kept."""
    settings = {"encoder": "viseme_oracle", "frame_stack": stack, "collapse_repeats": False}
    return np.concatenate(visemes.encode(visemes.fit(settings, split / "lips"), split / "lips"))


def purity(units: np.ndarray, labels: np.ndarray) -> float:
    pairs = np.zeros((units.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(pairs, (units, labels), 1)
    return float(pairs.max(axis=1).sum() / len(units))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT / "results" / "corpus" / "3eq"))
    parser.add_argument("--fit-split", default="train")
    parser.add_argument("--eval-split", default="val")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--fit-frames", type=int, default=50000)
    parser.add_argument("--only", default="", help="run the configurations whose name holds this text")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    print(f"lip units vs visemes: fit on {corpus / args.fit_split}, scored on {corpus / args.eval_split}, "
          f"{args.units} units")
    print(f"{'configuration':36s} {'NMI':>6s} {'purity':>7s} {'majority':>9s} {'frames':>8s} {'fit+encode s':>13s}")
    for name, extra in ((n, e) for n, e in CONFIGS.items() if args.only in n):
        settings = {"encoder": "pixel_kmeans", "n_units": args.units, "fit_frames": args.fit_frames,
                    "seed": 1234, "collapse_repeats": False, **extra}
        module = MODULES[settings["encoder"]]
        start = time.perf_counter()
        codebook = module.fit(settings, corpus / args.fit_split / "lips")
        units = np.concatenate(module.encode(codebook, corpus / args.eval_split / "lips"))
        seconds = time.perf_counter() - start
        labels = viseme_labels(corpus / args.eval_split, int(extra.get("frame_stack", 1)))
        assert len(units) == len(labels), (len(units), len(labels))
        majority = np.bincount(labels).max() / len(labels)
        print(f"{name:36s} {normalized_mutual_info_score(labels, units):6.3f} {purity(units, labels):7.3f} "
              f"{majority:9.3f} {len(units):8d} {seconds:13.1f}")


if __name__ == "__main__":
    main()
