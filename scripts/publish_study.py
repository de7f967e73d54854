"""Copy a preset's finished study reports into docs/results/<preset>/<study>/, each with the exact
config, the code version and the compute it took, so that docs/results.md cites committed files.

    .venv/bin/python scripts/publish_study.py --configfile presets/study.yaml [--workdir .] [--out docs/results] [--study NAME]

Per study of the preset whose report is finished in the workdir: results/report/<study>/ (wer.csv,
rb.csv, perceptual.csv, speed.csv, contrasts.csv, summary.md, figures) -> <out>/<preset>/<study>/,
beside config.yaml (the config file, byte for byte), provenance.json (the workdir's commit when
published, machine, package versions) and compute.csv (per rule: jobs, job-hours, largest resident
set, from the workflow's own benchmark records). The compute is the study's own: the jobs its
report depends on (Snakemake's plan of the report from scratch, `-n --forceall`), runs shared with
another study included, so each study's total is what it costs alone, however the workdir was
shared. A training resumed after an interruption counts the training time of all its attempts
(the run's train_log.tsv sums it as elapsed_s; the benchmark record times the last attempt only),
and a training with no benchmark record (a model adopted from a recipe experiment that trained it
with the same settings and inputs, see docs/results.md) counts the time its train_log.tsv records.
provenance.json adds each Snakemake invocation (.snakemake/log) that ran one of those jobs:
its start, wall-clock hours, and how many of its jobs were the study's.

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


BENCHMARK = re.compile(r"^\s*benchmark: results/benchmarks/(\S+)$", re.M)


def study_jobs(workdir: Path, configfile: Path, study: str) -> set[str]:
    """Benchmark records (paths under results/benchmarks) of every job the study's report depends
    on: Snakemake's own plan of it from scratch, in the workdir's Snakefile."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--snakefile", str(workdir / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(configfile.resolve()), "--replace-workflow-config",
         "--workflow-profile", "none", f"results/report/{study}/summary.md"],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"planning study {study} in {workdir} failed:\n{proc.stderr[-3000:]}")
    return set(BENCHMARK.findall(proc.stdout + proc.stderr))


def invocations(workdir: Path) -> list[dict]:
    """Each Snakemake invocation of the workdir that ran a job: start, wall-clock hours (first to
    last timestamp of its log) and the benchmark records of the jobs it started."""
    runs = []
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        text = log.read_text(errors="replace")
        stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
                  for line in text.splitlines() if (m := STAMP.match(line.strip()))]
        if len(stamps) >= 2:  # dry runs and runs with nothing to do have fewer
            runs.append({"start": stamps[0].isoformat(), "hours": (stamps[-1] - stamps[0]).total_seconds() / 3600,
                         "jobs": set(BENCHMARK.findall(text))})
    return runs


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


def publish(configfile: Path, workdir: Path, out: Path, only: list[str] | None = None) -> tuple[list[str], list[str], list[str], dict]:
    """Publish every study finished in the workdir (or those of `only`); returns (published, kept
    from before, missing, each study's compute totals); exits naming the studies when none is
    finished."""
    config = load_config(configfile)  # validated: a typo in the preset is named here, not later
    unknown = sorted(set(only or []) - set(config["studies"]))
    if unknown:
        raise SystemExit(f"--study {', '.join(unknown)}: not a study of {configfile} ({', '.join(config['studies'])})")
    dest = out / config["name"]
    finished = [study for study in config["studies"] if (only is None or study in only)
                and all((workdir / "results" / "report" / study / name).is_file() for name in REPORT_FILES)]
    kept = [study for study in config["studies"] if study not in finished and (dest / study / "provenance.json").is_file()]
    missing = [study for study in config["studies"] if study not in finished and study not in kept]
    if not finished:
        raise SystemExit(f"{workdir / 'results' / 'report'}: no finished report of a study in {configfile} "
                         f"({', '.join(config['studies'])}); run the workflow first")
    dest.mkdir(parents=True, exist_ok=True)
    info, runs = provenance(workdir, configfile), invocations(workdir)
    records = with_resumed_trainings(measured(workdir / "results"), workdir / "results")
    totals = {}
    for study in finished:
        jobs = study_jobs(workdir, configfile, study)
        compute = _compute(with_trainings_without_record(records, jobs, workdir / "results"), jobs, runs)
        totals[study] = compute[1]
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
    return finished, kept, missing, totals


def logged_training_seconds(results: Path, job: str) -> float | None:
    """The training time a train job's run logged over all its attempts (train_log.tsv's last
    elapsed_s), or None where the job is not a training or its run has no log."""
    log = results / "runs" / Path(job).stem / "train_log.tsv"
    if not job.startswith("train/") or not log.is_file():
        return None
    elapsed = pd.read_csv(log, sep="\t")["elapsed_s"].dropna()
    return float(elapsed.iloc[-1]) if len(elapsed) else None


def with_resumed_trainings(records: pd.DataFrame, results: Path) -> pd.DataFrame:
    """A train job's seconds: its benchmark record's, or the training time its train_log.tsv sums
    over resumed attempts where that is longer (the record times the last attempt only)."""
    def seconds(row) -> float:
        logged = logged_training_seconds(results, row.job)
        return row.s if logged is None else max(row.s, logged)

    return records.assign(s=[seconds(row) for row in records.itertuples()])


def with_trainings_without_record(records: pd.DataFrame, jobs: set[str], results: Path) -> pd.DataFrame:
    """Add a record for each train job of ``jobs`` that has none but whose run logged its training
    time (a model trained outside the workflow and adopted into it): those seconds, no memory
    figure, ``adopted`` set so that the totals can say how many."""
    rows = [dict(rule="train", job=job, s=seconds, max_rss_mb=float("nan"), cpu_s=float("nan"), adopted=True)
            for job in sorted(jobs - set(records["job"]))
            if (seconds := logged_training_seconds(results, job)) is not None]
    return pd.concat([records, pd.DataFrame(rows)], ignore_index=True) if rows else records


def _compute(records: pd.DataFrame, jobs: set[str], runs: list[dict]) -> tuple[pd.DataFrame, dict]:
    """Per rule and in total, the benchmark records of the study's ``jobs``; the invocations that ran any."""
    records = records[records["job"].isin(jobs)]
    per_rule = records.groupby("rule").agg(jobs=("job", "count"), job_hours=("s", "sum"), max_rss_mb=("max_rss_mb", "max"))
    per_rule["job_hours"] = (per_rule["job_hours"] / 3600).round(3)
    ran = [{"start": run["start"], "wall_hours": round(run["hours"], 2), "jobs_of_study": len(run["jobs"] & jobs),
            "jobs": len(run["jobs"])} for run in runs if run["jobs"] & jobs]
    return per_rule, {"job_hours": round(float(per_rule["job_hours"].sum()), 2), "jobs": len(jobs),
                      "jobs_without_record": len(jobs - set(records["job"])),
                      "trainings_adopted": int(records["adopted"].eq(True).sum()) if "adopted" in records else 0,
                      "wall_hours": round(sum(run["wall_hours"] for run in ran), 2), "invocations": ran}


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
    parser.add_argument("--study", action="append", help="publish only this study (repeatable); default: every "
                        "finished one. Others keep their published copies")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    published, kept, missing, totals = publish(args.configfile, args.workdir, args.out, args.study)
    for study, total in totals.items():
        print(f"published: {study} ({total['job_hours']} job-hours over {total['jobs']} jobs, "
              f"{total['jobs_without_record']} without a benchmark record, {total['trainings_adopted']} trainings "
              f"adopted; {len(total['invocations'])} invocations "
              f"ran its jobs, {total['wall_hours']} h wall in all)")
    print(f"kept as published before: {', '.join(kept) or 'none'}; missing: {', '.join(missing) or 'none'}")


if __name__ == "__main__":
    main()
