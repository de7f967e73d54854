"""Recipe experiments side by side (docs/recipe-log.md): one row per `scripts/recipe_experiment.py`
folder, its validation WER per condition, the error rate of the noisy second halves at the
noisiest condition, the perceptual score of each extra modality, and whether the run copies.

    .venv/bin/python scripts/recipe_table.py exp/ao-s* [--reference exp/a-s0]

A run *copies* from an extra modality (the issue's "learns to copy") when deranging that modality
across the validation items costs it at least COPY_POINTS WER points on clean audio. Measured on
the default preset's test split before this rule was set: the A+O run of README's table (recipe
log row 29), which copies, lost 17.5-21.3 points; the A+O run of row 18, which had not learned to
copy (it tied audio only), lost 2.0 on clean audio and 2.8 at -10 dB. With `--reference` (an
audio-only experiment) the table also gives each run's relative benefit over it, per condition.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dmlm.report.metrics import relative_benefit  # noqa: E402

COPY_POINTS = 5.0


def load(folder: Path) -> dict:
    path = folder / "result.json"
    if not path.exists():
        raise SystemExit(f"{path}: no result (has the experiment finished?)")
    return json.loads(path.read_text())


def copies(result: dict, modality: str = "ocr") -> bool | None:
    score = result.get("perceptual", {}).get(modality, {}).get("clean")
    return None if score is None else score >= COPY_POINTS


def row(folder: Path, result: dict, reference: dict | None) -> list[str]:
    conds = list(result["wer"])
    noisiest = conds[-1]
    cells = [folder.name, result["run"].split(".")[0], f"s{result['run'].rsplit('.s', 1)[1]}",
             " ".join(result.get("set", [])) or "-", f"{result['best_val_transcript_loss']:.2f}",
             " / ".join(f"{result['wer'][c]:.1f}" for c in conds),
             f"{result['first_second_half_error'][noisiest][1]:.1f}"]
    perceptual = result.get("perceptual", {})
    cells.append(", ".join(f"{m} {' / '.join(f'{v:+.1f}' for v in by_cond.values())}" for m, by_cond in perceptual.items()) or "-")
    if reference:
        cells.append(" / ".join(f"{100 * relative_benefit(reference['wer'][c], result['wer'][c]):.0f}"
                                for c in conds if reference["wer"].get(c)))
    flag = copies(result)
    cells.append("-" if flag is None else ("yes" if flag else "**no**"))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--reference", type=Path, help="an audio-only experiment: adds RB (%%) per condition")
    opts = parser.parse_args()
    reference = load(opts.reference) if opts.reference else None
    results = [(f, load(f)) for f in opts.folders]
    conds = list(results[0][1]["wer"])
    header = ["folder", "modalities", "seed", "changes", "val transcript loss", f"val WER {' / '.join(conds)}",
              f"2nd halves {conds[-1]}", "perceptual (points)", *(["RB %"] if reference else []), "copies"]
    print("| " + " | ".join(header) + " |")
    print("|" + "--|" * len(header))
    for folder, result in results:
        print("| " + " | ".join(row(folder, result, reference)) + " |")
    flags = [copies(r) for _, r in results if copies(r) is not None]
    if flags:
        print(f"\ncopies from the OCR: {sum(flags)} of {len(flags)} runs")
    for cond in conds:
        values = [r["wer"][cond] for _, r in results]
        spread = f" (sd {statistics.stdev(values):.1f})" if len(values) > 1 else ""
        print(f"mean val WER {cond}: {statistics.mean(values):.1f}{spread} over {len(values)} runs")
    overall = statistics.mean(r["wer"][c] for _, r in results for c in conds)
    print(f"mean val WER over the {len(conds)} conditions and {len(results)} runs: {overall:.2f}")


if __name__ == "__main__":
    main()
