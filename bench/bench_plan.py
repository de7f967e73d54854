"""Planning cost at cluster scale: our workflow vs two minimal Snakefiles with the same jobs.

Measures, side by side and interleaved (so machine load hits both alike), two things a user of
the paper grid waits for before anything runs:

- plan: `snakemake -n` from nothing (every job to run);
- no-op: `snakemake -n` once every output exists (nothing to run: "Nothing to be done").

"plan" is measured cold (the config never validated in this folder: dmlm/validation_cache.py),
"no-op" warm (a rerun follows the run that validated the same config).

For the no-op case every output file the plan lists (`--summary`) is created empty with one
common modification time, for all workflows alike (running 2,000 jobs is not the point).
Two minimal Snakefiles, each job a `touch`:

- "minimal": the same jobs per layer as ours (preparation jobs, one training job per run, one
  evaluation per run and test condition, plain or with one modality permuted, one report per
  study), each job reading one file of the layer before;
- "same DAG": our plan's jobs exactly (read from our `snakemake -n`), each rule with the same
  number of outputs, a log and a benchmark where ours has them, and each job reading the same
  number of files from the same producing jobs (renamed), through a dict lookup: no params, no
  resources, no shell formatting to speak of. What ours costs beyond it is our rules' own work
  (their input functions, params, resources and shell commands); what it costs beyond "minimal"
  is Snakemake's work per declared file.

Prints wall and CPU seconds (best of --repeat) and the ratios ours / each minimal.

    .venv/bin/python bench/bench_plan.py [--configfile presets/paper.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
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


SAME_DAG_HEAD = '''\
import json

JOBS = json.loads(open("jobs.json").read())  # rule -> the input files of each of its jobs


wildcard_constraints:
    i=r"\\d+",


rule all:
    input:
        JOBS["all"][0],
'''

SAME_DAG_RULE = '''

rule {rule}:
    input:
        lambda wc: JOBS["{rule}"][int(wc.i)],
    output:
        {outputs}
{extra}    shell:
        "touch {{output}}"
'''


def parse_plan(text: str) -> list[dict]:
    """The jobs of a `snakemake -n` printout: rule, input, output, log and benchmark files."""
    jobs, job = [], None
    for line in text.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line)
        if head:
            job = {"rule": head[1], "input": [], "output": [], "log": [], "benchmark": []}
            jobs.append(job)
            continue
        field = re.match(r"^    (input|output|log|benchmark): (.*)$", line)
        if job is not None and field:
            job[field[1]] = field[2].split(", ")
    return jobs


def same_dag_snakefile(jobs: list[dict], folder: Path) -> None:
    """Write the "same DAG" minimal workflow into ``folder`` (Snakefile, jobs.json, external inputs)."""
    ids: dict[str, int] = {}
    renamed: dict[str, str] = {}
    shape: dict[str, tuple[int, bool, bool]] = {}
    for job in jobs:
        rule = job["rule"]
        i = ids[rule] = ids.get(rule, -1) + 1
        job["id"] = i
        this = (len(job["output"]), bool(job["log"]), bool(job["benchmark"]))
        assert shape.setdefault(rule, this) == this, (rule, shape[rule], this)
        for k, name in enumerate(job["output"]):
            renamed[name] = f"out/{rule}/{i}.{k}"
    inputs: dict[str, list[list[str]]] = {}
    external = 0
    for job in sorted(jobs, key=lambda j: (j["rule"], j["id"])):
        files = []
        for name in job["input"]:
            if name not in renamed:  # not made by any job (a pretrained folder's file, say): exists
                renamed[name] = f"ext/{external}"
                (folder / "ext").mkdir(parents=True, exist_ok=True)
                (folder / renamed[name]).touch()
                external += 1
            files.append(renamed[name])
        inputs.setdefault(job["rule"], []).append(files)
    text = SAME_DAG_HEAD
    for rule, (n_out, log, bench) in shape.items():
        if rule == "all":
            continue
        outputs = "\n        ".join(f'"out/{rule}/{{i}}.{k}",' for k in range(n_out))
        extra = (f'    log:\n        "log/{rule}/{{i}}.log",\n' if log else "") + (
            f'    benchmark:\n        "bench/{rule}/{{i}}.tsv",\n' if bench else "")
        text += SAME_DAG_RULE.format(rule=rule, outputs=outputs, extra=extra)
    (folder / "jobs.json").write_text(json.dumps(inputs))
    (folder / "Snakefile").write_text(text)


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

    same = tmp / "same_dag"
    same.mkdir()
    _, _, text = run([*ours_cmd, "-n"], ours)
    jobs = parse_plan(text)
    same_dag_snakefile(jobs, same)
    _, _, text = run([*snake, "-n", "--quiet", "rules"], same)
    assert job_stats(text)["total"] == stats["total"], (job_stats(text), stats)
    _, _, text = run([*snake, "-n"], minimal)
    per_job = {name: sum(len(j["input"]) for j in plan) / len(plan) for name, plan in
               (("ours", jobs), ("minimal", parse_plan(text)))}
    print(f"same DAG: the same {len(jobs)} jobs and files: {per_job['ours']:.1f} input files per job "
          f"(minimal: {per_job['minimal']:.1f})")

    workflows = (("ours", ours_cmd, ours), ("minimal", snake, minimal), ("same DAG", snake, same))

    def measure(case: str, expect, cold: bool) -> None:
        """Best of --repeat, the workflows alternating so that machine load hits them alike.
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

    print(f"{'case':8} {'against':9} {'ours wall s':>12} {'its wall s':>11} {'ratio':>6} {'ours CPU s':>11} "
          f"{'its CPU s':>10} {'ratio':>6}")
    for case in ("plan", "no-op"):
        ow, oc = plans["ours", case]
        for other in ("minimal", "same DAG"):
            mw, mc = plans[other, case]
            print(f"{case:8} {other:9} {ow:12.2f} {mw:11.2f} {ow / mw:6.2f} {oc:11.2f} {mc:10.2f} {oc / mc:6.2f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
