"""Copy a preset's finished study reports into docs/results/<preset>/<study>/, each with the exact
config, the code version and the compute it took, so that docs/results.md cites committed files.

    .venv/bin/python scripts/publish_study.py --configfile presets/study.yaml [--workdir .] [--out docs/results]

Per study of the preset whose report is finished in the workdir: results/report/<study>/ (wer.csv,
rb.csv, perceptual.csv, speed.csv, contrasts.csv, summary.md, figures) -> <out>/<preset>/<study>/,
beside config.yaml (the config file, byte for byte), provenance.json (the workdir's commit when
published, machine, package versions) and compute.csv (per rule: jobs, job-hours, largest resident
set, from the workflow's own benchmark records; provenance.json adds the wall-clock hours of every
Snakemake invocation that ran jobs, .snakemake/log). The compute counts everything the workdir
ran: run a study in a folder of its own for its own total.

A study whose report is not in the workdir keeps its earlier published copy untouched (or is
listed as missing), so a preset too large for one machine session is published study by study
(`snakemake -c all <study's report> --configfile ...`, then this script, then commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from rule_resources import measured  # noqa: E402  (bench/rule_resources.py: benchmark records per job)

from dmlm.config import load_config  # noqa: E402

REPORT_FILES = ("wer.csv", "rb.csv", "perceptual.csv", "speed.csv", "contrasts.csv", "summary.md")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def invocation_hours(workdir: Path) -> list[float]:
    """Wall-clock hours of each Snakemake invocation in the workdir that ran a job (first to last
    timestamp of its log); dry runs and invocations with nothing to do have fewer than 2 stamps."""
    hours = []
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
                  for line in log.read_text(errors="replace").splitlines() if (m := STAMP.match(line.strip()))]
        if len(stamps) >= 2:
            hours.append((stamps[-1] - stamps[0]).total_seconds() / 3600)
    return hours


def provenance(workdir: Path, configfile: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(workdir), *args], capture_output=True, text=True).stdout.strip()

    import snakemake
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    commit = git("rev-parse", "HEAD") or None  # None: the workdir is not a git checkout
    return {  # the checkout as published: pin it while the study runs (code changes rerun jobs)
        "config": str(configfile), "commit_at_publish": commit,
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
        "published": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "snakemake": snakemake.__version__},
    }


def publish(configfile: Path, workdir: Path, out: Path) -> tuple[list[str], list[str], list[str], dict]:
    """Publish every study finished in the workdir; returns (published, kept from before, missing,
    the workdir's compute totals); exits naming the studies when none is finished."""
    config = load_config(configfile)  # validated: a typo in the preset is named here, not later
    dest = out / config["name"]
    finished = [study for study in config["studies"]
                if all((workdir / "results" / "report" / study / name).is_file() for name in REPORT_FILES)]
    kept = [study for study in config["studies"] if study not in finished and (dest / study / "provenance.json").is_file()]
    missing = [study for study in config["studies"] if study not in finished and study not in kept]
    if not finished:
        raise SystemExit(f"{workdir / 'results' / 'report'}: no finished report of a study in {configfile} "
                         f"({', '.join(config['studies'])}); run the workflow first")
    dest.mkdir(parents=True, exist_ok=True)
    compute, info = _compute(workdir), provenance(workdir, configfile)
    for study in finished:
        staging = Path(tempfile.mkdtemp(prefix=f".{study}-", dir=dest))
        try:
            _fill(staging, workdir / "results" / "report" / study, configfile, compute, info)
        except BaseException:  # nothing half-written is left beside the published copies
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.chmod(0o755)  # mkdtemp's 0700 would survive the rename
        if (dest / study).exists():  # replace the previous copy only once the new one is complete
            shutil.rmtree(dest / study)
        staging.rename(dest / study)
    return finished, kept, missing, compute[1]


def _compute(workdir: Path) -> tuple[pd.DataFrame, dict]:
    jobs = measured(workdir / "results")
    per_rule = jobs.groupby("rule").agg(jobs=("job", "count"), job_hours=("s", "sum"), max_rss_mb=("max_rss_mb", "max"))
    per_rule["job_hours"] = (per_rule["job_hours"] / 3600).round(3)
    hours = invocation_hours(workdir)
    return per_rule, {"job_hours": round(float(per_rule["job_hours"].sum()), 2),
                      "wall_hours": round(sum(hours), 2), "invocations": len(hours)}


def _fill(staging: Path, report: Path, configfile: Path, compute: tuple[pd.DataFrame, dict], info: dict) -> None:
    for path in [*(report / name for name in REPORT_FILES), *sorted(report.glob("*.png"))]:
        shutil.copy2(path, staging / path.name)
    shutil.copyfile(configfile, staging / "config.yaml")
    per_rule, totals = compute
    per_rule.to_csv(staging / "compute.csv")
    (staging / "provenance.json").write_text(json.dumps({**info, "compute": totals}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", required=True, type=Path)
    parser.add_argument("--workdir", default=Path("."), type=Path, help="the folder the study ran in")
    parser.add_argument("--out", default=ROOT / "docs" / "results", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    published, kept, missing, totals = publish(args.configfile, args.workdir, args.out)
    print(f"published: {', '.join(published)} ({totals['job_hours']} job-hours, {totals['wall_hours']} h wall over "
          f"{totals['invocations']} invocations in the workdir)")
    print(f"kept as published before: {', '.join(kept) or 'none'}; missing: {', '.join(missing) or 'none'}")


if __name__ == "__main__":
    main()
