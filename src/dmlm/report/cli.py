"""`dmlm report`: a study's wer.csv, rb.csv, perceptual.csv, speed.csv, contrasts.csv, summary.md
and figures.

Made from whatever evaluations exist: files that are missing (a failed or unfinished run) are
listed in summary.md and on stderr, not silently left out.
"""

from __future__ import annotations

import sys

OUTPUTS = ["wer.csv", "rb.csv", "perceptual.csv", "speed.csv", "contrasts.csv", "summary.md",
           "rb.png", "wer_heatmap.png", "perceptual.png", "training.png", "contrasts.png"]


def register(subparsers) -> None:
    from dmlm.cli import add_common_args

    p = subparsers.add_parser("report", help="aggregate a study's evaluations")
    add_common_args(p)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--config", default=None,
                   help="workflow config to take the study's grid from (instead of --settings), "
                        "e.g. to report on a partial results folder outside Snakemake")
    p.add_argument("--study", default=None, help="with --config: the study to report")
    p.set_defaults(func=run)


def build_report(settings: dict, runs_dir, out_dir) -> list:
    """Write the study's report into ``out_dir``; returns the missing files (``collect.Missing``)."""
    from pathlib import Path

    from dmlm.report.collect import collect
    from dmlm.report.contrasts import contrast_table
    from dmlm.report.plots import plot_all
    from dmlm.report.settings import REPORT_DEFAULTS
    from dmlm.report.summary import markdown
    from dmlm.report.tables import (
        Bootstrap,
        axes_of,
        perceptual_table,
        rb_table,
        speed_table,
        wer_table,
    )
    from dmlm.storage import atomic_path, write_table

    out_dir = Path(out_dir)
    options = {**REPORT_DEFAULTS, **settings.get("report", {})}
    evals = settings["evals"]
    axes = axes_of(evals)
    found = collect(evals, runs_dir)
    boot = Bootstrap(options)
    tables = {"wer": wer_table(found.wer, found.utterances, axes, boot)}
    tables["rb"] = rb_table(tables["wer"], found.utterances, axes, boot)
    tables["perceptual"] = perceptual_table(found.wer, found.permuted, found.utterances, found.permuted_utterances,
                                            axes, boot)
    tables["speed"] = speed_table(found.wer, axes)
    tables["contrasts"] = contrast_table(tables["wer"], tables["rb"], found.utterances, axes, boot)
    for name in ("wer", "rb", "perceptual", "speed", "contrasts"):
        write_table(out_dir / f"{name}.csv", tables[name])
    text = markdown(settings["study"], tables, axes, settings.get("families", {}), found.curves, found.missing,
                    options["confidence"])
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(text)
    plot_all(settings["study"], tables, found.curves, axes, out_dir, options["confidence"])
    return found.missing


def run(args) -> None:
    from dmlm.errors import DmlmError

    settings = args.settings
    if args.config:
        from dmlm.config import load_config
        from dmlm.report.settings import report_settings

        if not args.study:
            raise DmlmError("--config needs --study (the study to report)")
        settings = report_settings(load_config(args.config), args.study)
    if not settings.get("evals"):
        raise DmlmError("no evaluations to report: give --settings (from the workflow) or --config and --study")
    missing = build_report(settings, args.runs_dir, args.out_dir)
    if missing:
        print(f"dmlm report: {len(missing)} file(s) missing, the report is made from the rest:", file=sys.stderr)
        for m in missing:
            print(f"  {m}", file=sys.stderr)
    print(open(f"{args.out_dir}/summary.md").read())
