"""The workflow on a real single-node Slurm through `snakemake --profile slurm` (tests/slurm_cluster.py).

Every assertion about where a job ran reads Slurm's own records (jobcomp log, slurmctld log,
squeue), not Snakemake's word for it. Each Slurm run sits under `timeout -k 10 N`."""

import json
import re
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import copy_workflow, planned_rules, snakemake
from slurm_cluster import (
    PROFILE_GROUPS,
    copy_profile,
    expected_submissions,
    profile_command,
    run_profile,
    slurm,  # noqa: F401 (fixture)
    submissions,
)

RUN = "A.mfcc.mix.opt-tiny.paper.s0"


def explain(proc) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def planned_resources(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job a `snakemake -n` printed."""
    return re.findall(r"^\s*rule (\w+):\n(?:\s+.*\n)*?\s+resources: (.*)$", dry_run_output, re.M)


@pytest.fixture(scope="session")
def slurm_run(slurm, tmp_path_factory):  # noqa: F811
    """The tiny preset end to end through the Slurm profile (a few minutes), as the README runs it."""
    workdir = copy_profile(copy_workflow(tmp_path_factory.mktemp("slurm")))
    dry = snakemake(workdir, "-n")
    planned = planned_rules(dry)
    proc, seconds = run_profile(workdir, timeout=1800)
    assert proc.returncode == 0, explain(proc)
    output = proc.stdout + proc.stderr
    shown = {job_id: slurm.show_job(job_id) for job_id, _ in submissions(output)}  # before MinJobAge ends
    return workdir, planned, output, seconds, shown, planned_resources(dry.stdout + dry.stderr)


def write_config(workdir, name, edit):
    config = yaml.safe_load((workdir / "presets" / "tiny.yaml").read_text())
    edit(config)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_cluster_schedules_a_gpu_job(slurm, tmp_path):  # noqa: F811
    """The single-node Slurm itself: a batch job asking for the (fake) GPU runs and sees it."""
    out = tmp_path / "gpu.txt"
    job_id = int(subprocess.run(["sbatch", "--parsable", "--gpus=1", "-t", "1", "--mem", "100", "-o", str(out),
                                 "--wrap", "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"],
                                capture_output=True, text=True, check=True).stdout.strip())
    deadline = time.monotonic() + 120
    while slurm.job_state(job_id) not in ("COMPLETED", "FAILED", "CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slurm.job_state(job_id) == "COMPLETED"
    assert out.read_text().strip() == "CUDA_VISIBLE_DEVICES=0"


@pytest.mark.slow
def test_every_job_runs_as_a_slurm_job_and_training_asks_for_a_gpu(slurm, slurm_run):  # noqa: F811
    workdir, planned, output, seconds, *_ = slurm_run
    print(f"tiny preset through Slurm: {seconds:.0f} s")
    submitted = submissions(output)
    per_rule = {}
    for _, rule in submitted:
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == expected_submissions(planned)
    assert "report" in planned and "report" not in per_rule  # aggregation runs beside Snakemake

    records = slurm.completed_jobs()
    ctld_log = slurm.slurmctld_log.read_text()
    mine = {job_id: rec for job_id, rec in records.items() if rec["WorkDir"] == str(workdir)}
    assert set(mine) == {job_id for job_id, _ in submitted}, "Slurm ran exactly the jobs Snakemake submitted"
    for job_id, rule in submitted:
        rec = mine[job_id]
        assert rec["JobState"] == "COMPLETED", (rule, rec)
        assert rec["NodeList"] == slurm.node
        assert f"_slurm_rpc_submit_batch_job: JobId={job_id} " in ctld_log
        # started by the main scheduler or by backfill, on our node
        assert re.search(rf"(sched: Allocate JobId={job_id} NodeList={slurm.node} |"
                         rf"_start_job: Started JobId={job_id} in \S+ on {slurm.node}$)", ctld_log, re.M), job_id
    # slurmctld logs the GPU request of a job (DebugFlags=Gres): exactly the training jobs, one each
    gpu_requests = dict(re.findall(r"gres_job_state gres:gpu\(\d+\) type:\S+ job:(\d+) flags:\S*\n.*gres_per_job:(\d+)",
                                   ctld_log))
    assert {int(j): int(n) for j, n in gpu_requests.items() if int(j) in mine} == \
        {job_id: 1 for job_id, rule in submitted if rule == "train"}
    # the requests come from the rules: training's memory and time limit as declared
    train = [mine[j] for j, rule in submitted if rule == "train"]
    assert all("mem=3000M" in rec["Tres"] and rec["TimeLimit"] == "60" for rec in train)
    assert (workdir / "results" / "report" / "tiny" / "rb.csv").exists()


@pytest.mark.slow
def test_evaluation_bundles_fit_one_cpu_and_ask_for_their_jobs_time(slurm, slurm_run):  # noqa: F811
    """The profile's bundles of 4 evaluations (plain and permuted) run their jobs one after another:
    one CPU (the test node has 2; 4 side by side waited forever), the largest job's memory and
    the sum of the jobs' times (Slurm's records)."""
    _, _, output, _, shown, resources = slurm_run
    bundles = [job_id for job_id, group in submissions(output) if group == "evaluate"]
    grouped = [res for rule, res in resources if rule in PROFILE_GROUPS]
    assert {rule for rule, _ in resources if rule in PROFILE_GROUPS} == set(PROFILE_GROUPS)
    assert len(bundles) == -(-len(grouped) // 4) and len(grouped) > 4
    assert all(shown[j]["CPUs/Task"] == "1" and shown[j]["NumCPUs"] == "1" for j in bundles), shown
    runtime = [int(re.search(r"runtime=(\d+)", res).group(1)) for res in grouped]
    mems = {int(re.search(r"mem_mb=(\d+)", res).group(1)) for res in grouped}
    records = slurm.completed_jobs()
    assert sum(int(records[j]["TimeLimit"]) for j in bundles) == sum(runtime)
    # one job's memory, not the sum: the jobs do not run side by side
    assert all(int(re.search(r"mem=(\d+)M", records[j]["Tres"]).group(1)) in mems for j in bundles)


@pytest.mark.slow
def test_rerun_with_the_profile_submits_nothing(slurm, slurm_run):  # noqa: F811
    workdir = slurm_run[0]
    proc, _ = run_profile(workdir, timeout=300)
    assert proc.returncode == 0, explain(proc)
    assert submissions(proc.stdout + proc.stderr) == []
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cancelled_training_resumes_from_its_checkpoint_and_ends_as_if_uninterrupted(slurm, slurm_run):  # noqa: F811
    """scancel a running training job: Snakemake retries it, the retry resumes after the step of
    state/last.pt, and its final weights equal those of an uninterrupted run of the same settings."""
    workdir = slurm_run[0]

    def longer(config):
        config["training"].update(max_steps=200, eval_every=20)

    changed = write_config(workdir, "longer", longer)
    target = f"results/runs/{RUN}/checkpoint.pt"
    state = workdir / "results" / "runs" / RUN / "state" / "last.pt"
    cmd = profile_command(workdir, "--configfile", str(changed), "--retries", "1", target, timeout=900)
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, job_id = [], None
    try:
        for line in proc.stdout:  # wait for the training job's Slurm id, then for its first state
            lines.append(line)
            found = submissions(line)
            if found and found[0][1] == "train":
                job_id = found[0][0]
                break
        assert job_id is not None, "".join(lines)
        deadline = time.monotonic() + 600
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert state.exists(), "training never saved a state"
        subprocess.run(["scancel", str(job_id)], check=True)
        for _ in range(120):
            if slurm.job_state(job_id) == "CANCELLED":
                break
            time.sleep(0.5)
        assert slurm.job_state(job_id) == "CANCELLED"
        saved_step = torch.load(state, map_location="cpu", weights_only=False)["step"]
        rest, _ = proc.communicate(timeout=900)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 0, output[-6000:]
    assert 20 <= saved_step < 200
    trains = [j for j, rule in submissions(output) if rule == "train"]
    assert len(trains) == 2 and trains[0] == job_id, trains
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in output
    retry = slurm.completed_jobs()[trains[1]]
    assert retry["JobState"] == "COMPLETED"
    assert retry["TimeLimit"] == "120" and "mem=6000M" in retry["Tres"]  # attempt 2: twice the request
    log = (workdir / "results" / "logs" / "train" / f"{RUN}.log").read_text()
    # the retry's first step is saved_step + 1: it restored the state saved after saved_step
    assert f"resuming results/runs/{RUN} after step {saved_step}" in log
    assert not state.exists()  # removed once the checkpoint is written
    resumed = torch.load(workdir / target, map_location="cpu", weights_only=True)["state_dict"]

    # the same job uninterrupted, locally
    proc = subprocess.run([sys.executable, "-m", "snakemake", target, "-c", "1", "--configfile", str(changed),
                           "--forcerun", "train"],  # target first: --forcerun takes a list
                          cwd=workdir, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, explain(proc)
    assert "resuming" not in (workdir / "results" / "logs" / "train" / f"{RUN}.log").read_text()
    fresh = torch.load(workdir / target, map_location="cpu", weights_only=True)["state_dict"]
    assert fresh.keys() == resumed.keys()
    assert all(torch.equal(fresh[k], resumed[k]) for k in fresh)


@pytest.mark.slow
def test_a_failing_job_ends_the_run_with_its_error(slurm, slurm_run):  # noqa: F811
    workdir = slurm_run[0]

    def diverge(config):
        config["training"]["lr"] = 1.0e6  # training stops with "training diverged" at its first steps

    changed = write_config(workdir, "diverge", diverge)
    target = f"results/runs/{RUN}/checkpoint.pt"
    proc, seconds = run_profile(workdir, "--configfile", str(changed), "--retries", "0", target, timeout=400)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and seconds < 300, explain(proc)
    (job_id, rule), = submissions(output)
    assert rule == "train"
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'FAILED'" in output
    assert "Error in rule train" in output
    assert slurm.completed_jobs()[job_id]["JobState"] == "FAILED"
    assert "training diverged" in (workdir / "results" / "logs" / "train" / f"{RUN}.log").read_text()


@pytest.mark.slow
def test_a_drained_node_ends_the_run_at_the_queue_deadline(slurm, slurm_run):  # noqa: F811
    """No node can take the job: Slurm cancels it at cluster.max_queue_minutes (state DEADLINE)."""
    workdir = slurm_run[0]
    changed = write_config(workdir, "queue", lambda c: c.update(cluster={"max_queue_minutes": 1}))
    target = f"results/runs/{RUN}/checkpoint.pt"
    subprocess.run(["scontrol", "update", f"NodeName={slurm.node}", "State=DRAIN", "Reason=dmlm-test"], check=True)
    try:
        proc, seconds = run_profile(workdir, target, "--configfile", str(changed), "--retries", "0",
                                    "--forcerun", "train", timeout=400)
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={slurm.node}", "State=RESUME"], check=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and seconds < 300, explain(proc)
    (job_id, rule), = submissions(output)
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'DEADLINE'" in output
    record = slurm.completed_jobs()[job_id]
    assert record["JobState"] == "DEADLINE" and record["NodeList"] == "(null)"  # it never ran


@pytest.mark.slow
def test_status_checks_that_could_hang_are_refused_before_submitting(slurm, slurm_run):  # noqa: F811
    """Without accounting, sacct cannot report job states (the executor would wait forever)."""
    if "none" not in slurm.config.get("AccountingStorageType", "none"):
        pytest.skip("this Slurm has accounting: sacct works")
    workdir = slurm_run[0]
    proc, seconds = run_profile(workdir, "--slurm-status-command", "sacct", "--forcerun", "text_tokenizer",
                                timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, explain(proc)
    assert "this cluster has no accounting" in output
    assert submissions(output) == []


@pytest.mark.slow
def test_a_bundle_no_node_can_hold_stops_the_run_before_submitting(slurm, tmp_path):  # noqa: F811
    """Evaluations with all the node's CPUs each, two side by side (`group_lanes=2`): Slurm would
    leave the bundle PENDING (Reason=PartitionConfig) until its deadline; the run stops at once."""
    workdir = copy_profile(copy_workflow(tmp_path))
    cpus = slurm.node_cpus()
    wide = write_config(workdir, "wide", lambda c: c.update(cluster={"resources": {"evaluate": {"threads": cpus}}}))
    proc, seconds = run_profile(workdir, "--configfile", str(wide), "--resources", "group_lanes=2", timeout=150)
    output = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 124, 137) and seconds < 120, explain(proc)
    assert "no node can run these submissions" in output, explain(proc)
    assert re.search(rf"group evaluate \(\d jobs: [a-z_, ]+\) asks for CPUs={2 * cpus} \(largest node: {cpus}\)",
                     output), explain(proc)
    assert "group_lanes" in output and "cluster.resources.<rule>.threads" in output
    assert submissions(output) == []


@pytest.fixture(scope="session")
def site_run(slurm, tmp_path_factory):  # noqa: F811
    """One small job (the noise bank) with a site's sbatch option in the profile's default-resources
    and the preset's threads for the rule; returns its `scontrol show job` and jobcomp records."""
    workdir = copy_profile(copy_workflow(tmp_path_factory.mktemp("site")), "site")
    profile = yaml.safe_load((workdir / "site" / "config.yaml").read_text())
    profile["default-resources"]["slurm_extra"] = "'--nice=17'"
    (workdir / "site" / "config.yaml").write_text(yaml.safe_dump(profile))
    threads = write_config(workdir, "threads", lambda c: c.update(cluster={"resources": {"noise_bank": {"threads": 2}}}))
    proc, _ = run_profile(workdir, "results/noise/builtin/noise.tsv", "--configfile", str(threads),
                          profile="site", timeout=400)  # the target first: --configfile takes a list
    assert proc.returncode == 0, explain(proc)
    (job_id, rule), = submissions(proc.stdout + proc.stderr)
    assert rule == "noise_bank"
    return slurm.show_job(job_id), slurm.completed_jobs()[job_id]


@pytest.mark.slow
def test_the_sites_slurm_extra_reaches_sbatch_beside_the_deadline(site_run):
    shown, record = site_run
    assert shown["Nice"] == "17", shown  # the site's option
    assert shown["Deadline"] not in ("", "N/A"), shown  # and ours
    assert record["JobState"] == "COMPLETED"


@pytest.mark.slow
def test_a_presets_threads_set_the_jobs_cpus_per_task(slurm, site_run):  # noqa: F811
    if slurm.node_cpus() < 2:
        pytest.skip("a node with 2 CPUs is needed")
    shown, record = site_run
    assert shown["CPUs/Task"] == "2" and record["ProcCnt"] == "2", (shown, record)


def test_cluster_requests_come_from_the_preset_and_carry_the_queue_deadline(tmp_path):
    """`cluster.resources` replaces a rule's measured request; every job carries --deadline."""
    workdir = copy_workflow(tmp_path)

    def cluster(config):
        config["cluster"] = {"max_queue_minutes": 7, "resources": {"train": {"mem_mb": 9000, "runtime": 90}}}

    changed = write_config(workdir, "cluster", cluster)
    proc = snakemake(workdir, "-n", "--configfile", str(changed), "--forceall")
    out = proc.stdout + proc.stderr
    jobs = {m[1]: m[2] for m in re.finditer(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M)}
    assert "mem_mb=9000" in jobs["train"] and "runtime=90" in jobs["train"] and "gpu=1" in jobs["train"]
    assert "slurm_extra=--deadline=now+97minutes" in jobs["train"]  # queue wait + the job's own time
    assert "mem_mb=2500" in jobs["corpus"] and "gpu=0" in jobs["corpus"]  # measured default kept
    assert "slurm_extra=--deadline=now+37minutes" in jobs["corpus"]


def test_a_presets_evaluate_request_sizes_permuted_evaluations_and_threads_follow_the_preset(tmp_path):
    """`cluster.resources.evaluate` sizes the permuted evaluations too (the same decoding; the paper
    preset's 3,640 of them asked for the 2 GB default), and `.threads` sets the threads a job runs
    with (and, through Snakemake, the --cpus-per-task it asks Slurm for)."""
    workdir = copy_workflow(tmp_path)
    request = {"mem_mb": 7000, "runtime": 45, "threads": 2}
    changed = write_config(workdir, "sized", lambda c: c.update(cluster={"resources": {"evaluate": request}}))
    proc = snakemake(workdir, "-n", "-p", "--cores", "4", "--configfile", str(changed), "--forceall")
    out = proc.stdout + proc.stderr
    planned = planned_resources(out)
    assert {rule for rule, _ in planned} >= {"evaluate", "evaluate_permuted"}
    for rule, res in planned:
        sized = rule in ("evaluate", "evaluate_permuted")
        assert ("mem_mb=7000" in res and "runtime=45" in res) == sized, (rule, res)
    commands = re.findall(r"^Shell command: .* -m dmlm (\S+) .*?--threads (\d+)", out, re.M)
    evaluations = [threads for command, threads in commands if command == "evaluate"]  # plain and permuted
    assert len(evaluations) == len([r for r, _ in planned if r.startswith("evaluate")]) and set(evaluations) == {"2"}
    assert ("corpus", "2") in commands and ("mix", "1") in commands  # other rules keep their threads
