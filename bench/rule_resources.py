"""Measured time and memory of every job of a finished workflow, beside what each rule declares.

Every rule writes a Snakemake `benchmark:` record (wall seconds, max RSS) under
results/benchmarks/<rule>/...; this script folds them per rule and prints, side by side, the
measured maximum and the rule's declared `mem_mb` / `runtime` (the cluster's requests), flagging
rules whose requests are too small or far too large. Run it after a workflow:

    .venv/bin/python bench/rule_resources.py [results] [--configfile workflow_config.yaml]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def measured(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(results / "benchmarks").parts[0]
        record = pd.read_csv(tsv, sep="\t").iloc[-1]
        rows.append(dict(rule=rule, job=str(tsv.relative_to(results / "benchmarks")), s=record["s"],
                         max_rss_mb=record["max_rss"], cpu_s=record["cpu_time"]))
    if not rows:
        sys.exit(f"no benchmark records under {results / 'benchmarks'}: run the workflow first")
    return pd.DataFrame(rows)


def declared(configfile: str) -> pd.DataFrame:
    """Declared resources per rule, read from Snakemake's own dry-run of the same config."""
    with tempfile.TemporaryDirectory() as empty:  # an empty folder: every job is planned
        out = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
             "--configfile", str(Path(configfile).resolve()), "--replace-workflow-config", "--directory", empty],
            capture_output=True, text=True,
        ).stdout
    rows, rule = [], None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("resources:") and rule:
            fields = dict(kv.split("=", 1) for kv in line.removeprefix("resources:").replace(" ", "").split(",") if "=" in kv)
            rows.append(dict(rule=rule, mem_mb=int(fields.get("mem_mb", 0)), runtime_min=int(fields.get("runtime", 0))))
    return pd.DataFrame(rows).drop_duplicates("rule").set_index("rule")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default=str(ROOT / "results"))
    parser.add_argument("--configfile", default=str(ROOT / "workflow_config.yaml"))
    args = parser.parse_args()
    jobs = measured(Path(args.results))
    per_rule = jobs.groupby("rule").agg(jobs=("job", "count"), max_s=("s", "max"), total_s=("s", "sum"),
                                        max_rss_mb=("max_rss_mb", "max"))
    table = per_rule.join(declared(args.configfile), how="left")
    table["rss/mem_mb"] = (table["max_rss_mb"] / table["mem_mb"]).round(2)
    table["s/runtime"] = (table["max_s"] / (60 * table["runtime_min"])).round(2)
    table["verdict"] = [
        "REQUEST TOO SMALL" if (r > 1 or t > 1) else ("generous" if (r < 0.25 and t < 0.1) else "ok")
        for r, t in zip(table["rss/mem_mb"].fillna(0), table["s/runtime"].fillna(0))
    ]
    pd.set_option("display.width", 200)
    print(table.round(1).to_string())
    print(f"\nall jobs: {jobs['s'].sum() / 60:.1f} job-minutes; largest resident set {jobs['max_rss_mb'].max():.0f} MB")


if __name__ == "__main__":
    main()
