"""Does a Slurm submission fit a node? Checked before a run submits anything (rules/common.smk).

Slurm accepts a job that no node of its partition can hold and leaves it PENDING
(Reason=PartitionConfig or Resources) until its --deadline: days of silence. Here each request
(CPUs, memory, GPUs) is compared with the nodes `scontrol show node -o` lists, and the caller
stops the run with an error that names the request and the largest node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# a node's GPUs in its Gres field: gpu:4, gpu:a100:4, gpu:a100:4(S:0-1)
_GPU_GRES = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")


@dataclass(frozen=True)
class Node:
    name: str
    partitions: tuple[str, ...]
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Request:
    """One submission: a job, or a group job (Snakemake's merged request of its jobs)."""

    what: str  # e.g. "rule train" or "group evaluate (4 jobs: evaluate, evaluate_permuted)"
    partition: str | None  # None: the cluster's default partition
    cpus: int
    mem_mb: int
    gpus: int


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line))


def parse_nodes(shown: str) -> list[Node]:
    """Nodes of `scontrol show node -o` (one line per node)."""
    nodes = []
    for line in shown.splitlines():
        fields = _fields(line)
        if "NodeName" not in fields:
            continue
        gpus = sum(int(n) for n in _GPU_GRES.findall(fields.get("Gres", "")))
        nodes.append(Node(
            name=fields["NodeName"],
            partitions=tuple(p for p in fields.get("Partitions", "").split(",") if p),
            cpus=int(fields.get("CPUTot", 0)),
            mem_mb=int(fields.get("RealMemory", 0)),
            gpus=gpus,
        ))
    return nodes


def default_partition(shown: str) -> str | None:
    """The partition marked Default=YES in `scontrol show partition -o`."""
    for line in shown.splitlines():
        fields = _fields(line)
        if fields.get("Default") == "YES":
            return fields.get("PartitionName")
    return None


def misfit(request: Request, nodes: list[Node], default: str | None) -> str | None:
    """Why no node of the request's partition can run it, or None where one can."""
    partition = request.partition or default
    members = [n for n in nodes if partition in n.partitions]
    if not members:
        return f"{request.what} asks for partition {partition!r}, which has no nodes"
    if any(n.cpus >= request.cpus and n.mem_mb >= request.mem_mb and n.gpus >= request.gpus for n in members):
        return None
    wanted = {"CPUs": request.cpus, "mem_mb": request.mem_mb, "GPUs": request.gpus}
    largest = {"CPUs": max(n.cpus for n in members), "mem_mb": max(n.mem_mb for n in members),
               "GPUs": max(n.gpus for n in members)}
    over = [f"{k}={wanted[k]} (largest node: {largest[k]})" for k in wanted if wanted[k] > largest[k]]
    # each amount fits some node, but no node holds all of them at once
    detail = ", ".join(over) or ", ".join(f"{k}={v}" for k, v in wanted.items()) + " (no single node has all)"
    return f"{request.what} asks for {detail} in partition {partition!r}"
