"""Planning cost at cluster scale: our workflow vs a minimal Snakefile with the same number of jobs.

Measures, side by side and interleaved (so machine load hits both alike), two things a user of
the paper grid waits for before anything runs:

- plan: `snakemake -n` from nothing (every job to run);
- no-op: `snakemake -n` once every output exists (nothing to run: "Nothing to be done").

"plan" is measured cold (the config never validated in this folder: dmlm/validation_cache.py),
"no-op" warm (a rerun follows the run that validated the same config).

For the no-op case every output file the plan lists (`--summary`) is created empty with one
common modification time, for both workflows alike (running 2,000 jobs is not the point).
The minimal Snakefile has the same jobs per layer as ours (preparation jobs, one training job
per run, one evaluation per run and test condition, plain or with one modality permuted, one
report per study), each a `touch`.
Prints wall and CPU seconds (best of --repeat) and the ratios ours / minimal.

    .venv/bin/python bench/bench_plan.py [--configfile presets/paper.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = '''\
N_PREP, N_TRAIN, N_EVAL, N_REPORT = {n_prep}, {n_train}, {n_eval}, {n_report}


rule all:
    input:
        expand("out/report/{{r}}.txt", r=range(N_REPORT)),


rule prep:
    output:
        "out/prep/{{i}}.txt",
    shell:
        "touch {{output}}"


rule train:
    input:
        lambda wc: f"out/prep/{{int(wc.run) % N_PREP}}.txt",
    output:
        "out/train/{{run}}.txt",
    shell:
        "touch {{output}}"


rule evaluate:
    input:
        "out/train/{{run}}.txt",
    output:
        "out/eval/{{run}}/{{cond}}.txt",
    shell:
        "touch {{output}}"


def report_inputs(wildcards):
    # round robin over the runs, so that every run is evaluated whatever N_EVAL / N_TRAIN is
    evals = [(e % N_TRAIN, e // N_TRAIN) for e in range(N_EVAL)]
    mine = evals[int(wildcards.r)::N_REPORT]
    return [f"out/eval/{{run}}/{{cond}}.txt" for run, cond in mine]


rule report:
    input:
        report_inputs,
    output:
        "out/report/{{r}}.txt",
    shell:
        "touch {{output}}"
'''


def run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, output) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout + proc.stderr


def job_stats(text: str) -> dict[str, int]:
    stats = text.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}


def touch_outputs(workdir: Path, snakemake: list[str]) -> int:
    """Create every output of the plan (from `--summary`) empty, all with one mtime."""
    _, _, text = run([*snakemake, "--summary"], workdir)
    files = [line.split("\t")[0] for line in text.splitlines()[1:] if "\t" in line]
    stamp = time.time() - 60
    for name in files:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (stamp, stamp))
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default="presets/paper.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_plan_"))
    ours, minimal = tmp / "ours", tmp / "minimal"
    ours.mkdir()
    for name in ("Snakefile", "workflow_config.yaml"):
        shutil.copy(ROOT / name, ours / name)
    for name in ("rules", "presets", "src"):
        shutil.copytree(ROOT / name, ours / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    snake = [sys.executable, "-m", "snakemake", "-c", "1"]
    ours_cmd = [*snake, "--configfile", str(ours / args.configfile), "--replace-workflow-config"]

    _, _, text = run([*ours_cmd, "-n", "--quiet", "rules"], ours)
    stats = job_stats(text)
    # permuted evaluations are evaluations too (each reads one run's checkpoint, feeds a report)
    n_train, n_report = stats["train"], stats["report"]
    n_eval = stats["evaluate"] + stats.get("evaluate_permuted", 0)
    n_prep = stats["total"] - n_train - n_eval - n_report - stats.get("all", 0)
    minimal.mkdir()
    (minimal / "Snakefile").write_text(MINIMAL.format(n_prep=n_prep, n_train=n_train, n_eval=n_eval, n_report=n_report))
    _, _, text = run([*snake, "-n", "--quiet", "rules"], minimal)
    assert job_stats(text)["total"] == stats["total"], (job_stats(text), stats)
    print(f"{args.configfile}: {stats['total']} jobs ({n_prep} preparation, {n_train} train, {n_eval} evaluate (plain "
          f"or permuted), "
          f"{n_report} report, 1 all); minimal Snakefile: the same")

    workflows = (("ours", ours_cmd, ours), ("minimal", snake, minimal))

    def measure(case: str, expect, cold: bool) -> None:
        """Best of --repeat, the two workflows alternating so that machine load hits both alike.
        `cold`: without the stamp of an earlier validation of the same config (a first plan)."""
        for _ in range(args.repeat):
            for name, cmd, cwd in workflows:
                if cold:
                    shutil.rmtree(cwd / ".snakemake" / "dmlm-validated", ignore_errors=True)
                wall, cpu, out = run([*cmd, "-n"], cwd)
                assert expect(out), out[-2000:]
                old = plans.get((name, case), (float("inf"), float("inf")))
                plans[name, case] = (min(old[0], wall), min(old[1], cpu))

    plans: dict[tuple[str, str], tuple[float, float]] = {}
    measure("plan", lambda out: "Job stats:" in out, cold=True)
    for _, cmd, cwd in workflows:
        touch_outputs(cwd, cmd)
    measure("no-op", lambda out: "Nothing to be done" in out, cold=False)

    print(f"{'case':8} {'ours wall s':>12} {'minimal wall s':>15} {'ratio':>6} {'ours CPU s':>11} {'minimal CPU s':>14} {'ratio':>6}")
    for case in ("plan", "no-op"):
        (ow, oc), (mw, mc) = plans["ours", case], plans["minimal", case]
        print(f"{case:8} {ow:12.2f} {mw:15.2f} {ow / mw:6.2f} {oc:11.2f} {mc:14.2f} {oc / mc:6.2f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
