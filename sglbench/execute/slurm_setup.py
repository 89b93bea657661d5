"""Slurm around the runtime: its client commands, the allocation we run in, checks before a start.

The task layer reads SLURM_JOB_ID / SLURM_JOB_NODELIST and calls ``allocation_of``; the nodes come
from ``scontrol show hostnames`` and the job's GPUs per node from ``scontrol -d show job``.
``check_start`` runs before anything starts: an allocation exists, the topologies fit on it
(``plan.placement``), and the container tool asked for is there. Each failure is one line.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence

from sglbench.errors import ConfigError, ServerError
from sglbench.plan.placement import place, slurm_roles
from sglbench.settings import Settings
from sglbench.settings.model import Allocation
from sglbench.types import Topology

SLURM_TIMEOUT_S = 30.0
_GRES_LINE = re.compile(r"^\s*Nodes=(\S+) .*\bGRES=(\S*)", re.MULTILINE)
_GPUS = re.compile(r"gpu(?::[\w.-]+)?:(\d+)")


def run_slurm(argv: Sequence[str],
              timeout: float = SLURM_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command, output captured; its exit status is the caller's to judge.

    Raises:
        ConfigError: the command is not installed here.
        ServerError: it did not answer in time (slurmctld down or unreachable).
    """
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError:
        raise ConfigError(f"{argv[0]}: not found; run this where Slurm's client commands are "
                          "installed (a login or compute node)") from None
    except subprocess.TimeoutExpired:
        raise ServerError(f"{shlex.join(argv)}: no answer after {timeout:g}s; is slurmctld "
                          "reachable?") from None


def first_line(done: subprocess.CompletedProcess[str]) -> str:
    """The first line of what a Slurm command said (stderr first), for one-line errors."""
    text = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return text[0] if text else f"exit status {done.returncode}"


def hostnames(nodelist: str) -> list[str]:
    """``sgl-n[1-2]`` -> ``["sgl-n1", "sgl-n2"]`` through ``scontrol show hostnames``.

    Raises:
        ConfigError: scontrol cannot expand it.
    """
    done = run_slurm(["scontrol", "show", "hostnames", nodelist])
    if done.returncode != 0:
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist}: scontrol cannot expand it "
                          f"({first_line(done)}); run inside a live allocation")
    return done.stdout.split()


def allocation_of(job_id: str, nodelist: str | None) -> Allocation:
    """The allocation of job ``job_id`` (SLURM_JOB_ID): its nodes and GPUs per node.

    Raises:
        ConfigError: no such job (a stale SLURM_JOB_ID), or its node list cannot be read.
    """
    done = run_slurm(["scontrol", "-d", "show", "job", job_id])
    if done.returncode != 0:
        raise ConfigError(f"SLURM_JOB_ID={job_id}: {first_line(done)}; the allocation has ended "
                          "or the variable is stale: run inside a live allocation, or unset it")
    given = re.search(r"\bNodeList=(\S+)", done.stdout)
    nodelist = nodelist or (given.group(1) if given else "")
    nodes = hostnames(nodelist)
    gpus = dict.fromkeys(nodes, 0)
    for expr, gres in _GRES_LINE.findall(done.stdout):
        count = sum(int(n) for n in _GPUS.findall(gres))
        for node in hostnames(expr) if re.search(r"[\[,]", expr) else [expr]:
            gpus[node] = count
    return Allocation(job_id, nodelist, tuple(nodes), tuple(gpus[n] for n in nodes))


def no_allocation(role: str) -> ConfigError:
    """The one line for a Slurm role outside an allocation."""
    return ConfigError(f"{role.upper()}_RUNTIME=slurm (or RUNTIME=slurm): no Slurm allocation "
                       "here (SLURM_JOB_ID is unset); run inside `salloc -N<nodes> ...` or an "
                       "sbatch job, or submit from a login node with `invoke submit`")


def check_start(settings: Settings, topologies: Sequence[Topology]) -> None:
    """Before anything starts: an allocation, the topologies fit on it, the container tool.

    Raises:
        ConfigError: no allocation, too few nodes or GPUs, pyxis or apptainer missing.
    """
    roles = list(dict.fromkeys(r for t in topologies for r in slurm_roles(settings, t)))
    if not roles:
        return
    if settings.allocation is None:
        raise no_allocation(roles[0])
    nodes = sorted({slot.node for t in topologies for slot in place(settings, t)})
    check_container(settings, nodes)


def check_container(settings: Settings, nodes: Sequence[str]) -> None:
    """pyxis: srun knows ``--container-image``; apptainer: every node has ``apptainer``.

    Raises:
        ConfigError: naming CLUSTER_CONTAINER and what is missing where.
    """
    if settings.cluster_container == "pyxis":
        check_pyxis()
    elif settings.cluster_container == "apptainer" and settings.allocation is not None:
        # One step over the nodes that will run servers, as a server step would see them.
        done = run_slurm(["srun", f"--jobid={settings.allocation.job_id}", "--overlap",
                          f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}",
                          "--ntasks-per-node=1", f"--nodelist={','.join(nodes)}",
                          "--job-name=sglb-check-apptainer", "sh", "-c",
                          "command -v apptainer >/dev/null || hostname"])  # fmt: skip
        if done.returncode != 0:
            raise ServerError(f"CLUSTER_CONTAINER=apptainer: the check step failed: "
                              f"{first_line(done)}")
        missing = sorted(set(done.stdout.split()))
        if missing:
            raise ConfigError(f"CLUSTER_CONTAINER=apptainer: apptainer is not installed on "
                              f"{', '.join(missing)}; install it there, or set "
                              "CLUSTER_CONTAINER=none (SGLang on the nodes) or pyxis")


def check_pyxis() -> None:
    """srun lists ``--container-image`` only when the pyxis SPANK plugin is loaded.

    Raises:
        ConfigError: the plugin is missing.
    """
    done = run_slurm(["srun", "--help"])
    if "--container-image" not in done.stdout + done.stderr:
        raise ConfigError("CLUSTER_CONTAINER=pyxis: this srun has no --container-image (the "
                          "pyxis plugin is not loaded: `srun --help` does not list it); install "
                          "pyxis and enroot, or set CLUSTER_CONTAINER=apptainer or none")


def slurm_version() -> str | None:
    """``srun --version`` (``slurm-wlm 22.05.8``), None if it does not answer."""
    try:
        done = run_slurm(["srun", "--version"], timeout=10)
    except (ConfigError, ServerError):
        return None
    return done.stdout.strip() or None
