"""Run isolation: a run holds a lock on the host:ports and GPU ids it uses; no run touches another
live run's servers.

A lock is a JSON file under ``RUN_DIR/runs/<run-id>.json``: the run id, what started it, its
owner process (pid and creation time, so a reused pid is not mistaken for it), and the
``host:port`` listeners and ``host/GPU`` ids of every topology the run may start. A lock is live
while its owner process runs, or while any server of its run still runs (``invoke agg`` starts a
server and exits: its run lives as long as the server). A second run whose set meets a live
run's refuses with one line naming that run and how to stop it; a stale lock (owner and servers
gone) is removed.

Limits: the locks live in RUN_DIR, so two checkouts with different RUN_DIRs on one control host
see each other only through the ports themselves (the process runtime refuses a busy port) and
the docker container names; two control hosts driving the same nodes do not see each other.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from sglbench.errors import ServerError
from sglbench.execute.runtimes import runtimes_in_use
from sglbench.hosts import same_machine
from sglbench.plan.topology import check_topology
from sglbench.record.schema import now
from sglbench.settings import Settings
from sglbench.settings.checks import listeners
from sglbench.types import Service, Topology


@dataclass(frozen=True)
class RunLock:
    """What one run holds."""

    run_id: str
    command: str  # for people: "invoke compare", "invoke agg"
    pid: int
    create_time: float
    started: str
    listeners: list[str] = field(default_factory=list)  # "host:port"
    gpus: list[str] = field(default_factory=list)  # "host/gpu-id"


def lock_dir(settings: Settings) -> Path:
    """Where the locks of runs of these settings live."""
    return Path(settings.run_dir) / "runs"


# The keys of each service's listeners (a single-role task holds only its own).
_KEYS: dict[Service, tuple[str, ...]] = {
    "agg": ("AGG_PORT",), "prefill": ("PREFILL_PORT", "BOOTSTRAP_PORT"),
    "decode": ("DECODE_PORT",), "router": ("ROUTER_PORT", "ROUTER_PROMETHEUS_PORT"),
}  # fmt: skip


def held_by(settings: Settings, topologies: Sequence[Topology],
            services: Sequence[Service] = ()) -> tuple[list[str], list[str]]:
    """The listeners and GPU ids a run of ``topologies`` uses, as lock entries.

    Args:
        settings: the run's settings.
        topologies: what the run deploys.
        services: only these services' (``invoke prefill`` holds the prefill workers' only);
            empty: every service of the topologies.
    """
    keys = {k for s in services for k in _KEYS[s]}
    found: dict[str, None] = {}
    gpus: dict[str, None] = {}
    for topology in topologies:
        check_topology(settings, topology)
        for listener in listeners(settings, topology):
            if not keys or listener.key in keys:
                found[f"{listener.host}:{listener.port}"] = None
        gpus.update(dict.fromkeys(_gpu_entries(settings, topology, services)))
    return list(found), list(gpus)


def _gpu_entries(settings: Settings, topology: Topology,
                 services: Sequence[Service]) -> Iterator[str]:
    if settings.simulate:
        return  # the simulator holds no GPU
    from sglbench.plan.servers import server_specs

    for role in topology.workers:
        if services and role not in services:
            continue
        for spec in server_specs(settings, role, topology):
            if spec.runtime == "docker" and not settings.docker_gpus:
                continue  # DOCKER_GPUS=false: its container is given no GPU
            for gpu in spec.gpus.split(","):
                if gpu and gpu != "all":
                    yield f"{same_machine(spec.host)}/{gpu}"


def read_locks(settings: Settings) -> list[RunLock]:
    """Every readable lock (an unreadable file is nobody's: it is skipped)."""
    found = []
    folder = lock_dir(settings)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(RunLock(**json.loads(path.read_text())))
    return found


def _owner_alive(lock: RunLock) -> bool:
    try:
        proc = psutil.Process(lock.pid)
        return (abs(proc.create_time() - lock.create_time) < 0.05
                and proc.status() != psutil.STATUS_ZOMBIE)  # fmt: skip
    except psutil.Error:
        return False


def live_runs(settings: Settings) -> dict[str, RunLock]:
    """Locks of runs whose owner or any server still runs; stale locks are removed."""
    running = {i.run_id for runtime in runtimes_in_use(settings) for i in runtime.instances()
               if i.state == "running"}  # fmt: skip
    live = {}
    for lock in read_locks(settings):
        if _owner_alive(lock) or lock.run_id in running:
            live[lock.run_id] = lock
        else:
            release(settings, lock.run_id)
    return live


def check_free(settings: Settings, run_id: str, held: Sequence[str],
               gpus: Sequence[str]) -> None:
    """Raise ``ServerError`` when another live run holds one of ``held`` or ``gpus``."""
    for other in live_runs(settings).values():
        if other.run_id == run_id:
            continue
        clash = sorted(set(held) & set(other.listeners)) or sorted(set(gpus) & set(other.gpus))
        if clash:
            raise ServerError(
                f"{clash[0]} is held by run {other.run_id} ({other.command}, started "
                f"{other.started}); stop it with `invoke down --run {other.run_id}` or choose "
                "other ports / GPU ids")


def acquire(settings: Settings, run_id: str, command: str, topologies: Sequence[Topology],
            services: Sequence[Service] = ()) -> RunLock:
    """Hold the listeners and GPUs of ``topologies`` (of ``services``) for run ``run_id``.

    Raises:
        ServerError: another live run holds one of them (it is named, with how to stop it).
    """
    held, gpus = held_by(settings, topologies, services)
    check_free(settings, run_id, held, gpus)
    me = psutil.Process()
    lock = RunLock(run_id, command, me.pid, me.create_time(), now(), held, gpus)
    folder = lock_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{run_id}.tmp"
    tmp.write_text(json.dumps(asdict(lock), indent=2) + "\n")
    os.replace(tmp, folder / f"{run_id}.json")
    return lock


def release(settings: Settings, run_id: str) -> None:
    """Drop the lock of ``run_id`` (nothing when there is none)."""
    folder = lock_dir(settings)
    (folder / f"{run_id}.json").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (other runs), or gone: both fine
        folder.rmdir()


def run_is_live(settings: Settings, run_id: str) -> bool:
    """True while run ``run_id``'s owner or one of its servers runs."""
    return run_id in live_runs(settings)
