"""A real single-node Slurm for the tests (munge, slurmctld, slurmd from Debian packages).

The `slurm` fixture starts the daemons with scripts/slurm-up.sh when they are not running (and
stops them again at the end of the session if it started them); it skips only when the Slurm
packages are absent or the tests do not run as root. `run_profile` runs the workflow through
`snakemake --profile slurm` under a hard `timeout -k 10 N`, with status checks every few seconds.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client"}
LOCAL_RULES = {"all", "report"}
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# Faster than the shipped profile so that the tests take minutes: status checks start after 2 s
# (MinJobAge=300 stays above 3 x 2 s, so the executor keeps squeue), outputs are awaited 5 s.
# The profile's own groups (bundles of 4 evaluations) are kept: they must fit the 2-CPU test node.
TEST_OVERRIDES = ("--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
                  "--slurm-keep-successful-logs")
PROFILE_GROUPS = {"evaluate": "evaluate", "evaluate_permuted": "evaluate"}  # rule -> group (slurm/config.yaml)
GROUP_SIZE = {"evaluate": 4}


def _program(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None)


@dataclass
class Slurm:
    node: str
    config: dict[str, str]  # `scontrol show config`

    @property
    def jobcomp_log(self) -> Path:
        return Path(self.config["JobCompLoc"])

    @property
    def slurmctld_log(self) -> Path:
        return Path(self.config["SlurmctldLogFile"])

    def completed_jobs(self) -> dict[int, dict[str, str]]:
        """Slurm's own record of every finished job (jobcomp/filetxt): job id -> fields."""
        jobs = {}
        for line in self.jobcomp_log.read_text().splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            jobs[int(fields["JobId"])] = fields
        return jobs

    def job_state(self, job_id: int) -> str:
        out = subprocess.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def node_cpus(self) -> int:
        shown = subprocess.run(["scontrol", "show", "node", "-o", self.node], capture_output=True, text=True).stdout
        return int(re.search(r"CPUTot=(\d+)", shown).group(1))

    def show_job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` (the job as submitted; kept MinJobAge = 300 s after it ends)."""
        shown = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True).stdout
        return dict(re.findall(r"([\w/:]+)=(\S*)", shown))

    def node_state(self) -> str:
        return subprocess.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def _show_config() -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", out, re.M))


def _daemons_running(base: Path) -> bool:
    def alive(pidfile: Path) -> bool:
        try:
            os.kill(int(pidfile.read_text()), 0)
            return True
        except (OSError, ValueError):
            return False

    return all(alive(base / "run" / f"{d}.pid") for d in ("slurmctld", "slurmd"))


@pytest.fixture(scope="session")
def slurm():
    missing = sorted({pkg for prog, pkg in PROGRAMS.items() if _program(prog) is None})
    if missing:
        pytest.skip(f"Slurm packages absent: apt-get install {' '.join(missing)} (.ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm of the tests runs its daemons as root; run the tests as root")
    base = Path(os.environ.get("SLURM_BASE", "/var/tmp/slurm-ci"))
    started = not _daemons_running(base)
    up = subprocess.run(["timeout", "-k", "5", "180", "bash", str(ROOT / "scripts" / "slurm-up.sh")],
                        capture_output=True, text=True)
    assert up.returncode == 0, f"scripts/slurm-up.sh failed:\n{up.stdout}\n{up.stderr}"
    yield Slurm(node=subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip(),
                config=_show_config())
    if started:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm-down.sh")], capture_output=True)


def copy_profile(workdir: Path, name: str = "slurm") -> Path:
    shutil.copytree(ROOT / "slurm", workdir / name, dirs_exist_ok=True)
    return workdir


def profile_command(workdir: Path, *args: str, timeout: int, profile: str = "slurm") -> list[str]:
    """`snakemake --profile slurm` with the tiny preset, in `workdir`, under a hard timeout."""
    return ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", "--profile", profile,
            "--configfile", str(workdir / "presets" / "tiny.yaml"),
            *TEST_OVERRIDES, *args]


def run_profile(workdir: Path, *args: str, timeout: int = 1500,
                profile: str = "slurm") -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(profile_command(workdir, *args, timeout=timeout, profile=profile), cwd=workdir,
                          capture_output=True, text=True)
    return proc, time.monotonic() - start


def submissions(output: str) -> list[tuple[int, str]]:
    """(Slurm job id, rule or group) of every job Snakemake submitted, from its own log lines."""
    found = []
    for _, job_id, log in SUBMITTED.findall(output):
        kind = re.search(r"/slurm_logs/(rule|group)_([A-Za-z0-9_]+)/", log)
        # a group job's folder is group_<group>_<rules>; the profile names groups after their rule
        found.append((int(job_id), kind.group(2).split("_")[0] if kind.group(1) == "group" else kind.group(2)))
    return found


def expected_submissions(planned: dict[str, int]) -> dict[str, int]:
    """Slurm jobs a run should submit: one per job, one per bundle of a group's jobs (the profile's
    groups), none for local rules."""
    per_group: dict[str, int] = {}
    for rule, n in planned.items():
        if rule not in LOCAL_RULES:
            group = PROFILE_GROUPS.get(rule, rule)
            per_group[group] = per_group.get(group, 0) + n
    return {group: math.ceil(n / GROUP_SIZE.get(group, 1)) for group, n in per_group.items()}
