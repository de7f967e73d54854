"""`dmlm report`: a study's wer.csv, rb.csv, table.md and rb.png."""

from __future__ import annotations


def register(subparsers) -> None:
    from dmlm.cli import add_common_args

    p = subparsers.add_parser("report", help="aggregate a study's evaluations")
    add_common_args(p)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run)


def build_report(settings: dict, runs_dir, out_dir) -> None:
    from pathlib import Path

    from dmlm.report.plots import plot_wer_rb
    from dmlm.report.tables import collect_wer, markdown, relative_benefits
    from dmlm.storage import atomic_path, write_table

    out_dir = Path(out_dir)
    wer = collect_wer(settings["evals"], runs_dir)
    rb = relative_benefits(wer)
    write_table(out_dir / "wer.csv", wer)
    write_table(out_dir / "rb.csv", rb)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(markdown(settings["study"], wer, rb))
    plot_wer_rb(settings["study"], wer, rb, out_dir / "rb.png")


def run(args) -> None:
    build_report(args.settings, args.runs_dir, args.out_dir)
    print(open(f"{args.out_dir}/table.md").read())
