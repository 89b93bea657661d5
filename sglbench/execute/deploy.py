"""Bring servers and the router up and down, whatever runtime each role uses.

``up_*`` start, wait until ready and say where each server listens; if a start or readiness fails,
what that call started is stopped again, so a failed ``up`` leaves nothing behind. ``down`` and
``status`` see only what this project started (pid files, container labels); ``down`` with a
run id only what that run started. Runtimes are reached only through the ``Runtime`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from rich.console import Console

from sglbench.errors import ConfigError, ServerError
from sglbench.execute.readiness import wait_server_ready
from sglbench.execute.router import describe_router, run_router_foreground, start_router
from sglbench.execute.runtime import Instance, Runtime
from sglbench.execute.runtimes import runtime_for, runtimes_in_use
from sglbench.plan.router import ROUTER_NAME, RouterSpec, router_spec
from sglbench.plan.servers import ServerSpec, server_specs
from sglbench.plan.topology import check_topology, from_settings
from sglbench.settings import Settings
from sglbench.types import ROLES, Role, Topology


def new_run_id() -> str:
    """A run id that sorts by time, e.g. ``20261129-051700``."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def describe_role(settings: Settings, role: Role,
                  topology: Topology | None = None) -> list[str]:
    """The command of every worker of ``role`` (``--dry-run``), one line each."""
    lines = []
    for spec in server_specs(settings, role, topology):
        runtime = runtime_for(settings, spec.runtime)
        lines.append(f"# {spec.name} ({spec.runtime}) -> {spec.url}\n{runtime.describe(spec)}")
    return lines


def describe_mode(settings: Settings, topology: Topology) -> list[str]:
    """Everything ``up_mode`` would start, in order (``--dry-run``)."""
    lines = [line for role in topology.workers
             for line in describe_role(settings, role, topology)]  # fmt: skip
    if topology.routed:
        lines.append(f"# router ({settings.router_impl}) -> "
                     f"{router_spec(settings, topology).url}\n"
                     f"{describe_router(settings, topology)}")  # fmt: skip
    return lines


def up_role(settings: Settings, role: Role, *, run_id: str, console: Console,
            topology: Topology | None = None) -> list[ServerSpec]:
    """Start every worker of ``role``, wait until each answers ``/health_generate``.

    Workers start together and are then awaited one by one, so N workers take about as long as
    one. On any failure the workers started here are stopped again.

    Raises:
        ServerError: a worker could not start, or its port is taken by someone else.
        ReadinessError: a worker exited or was not ready before READY_TIMEOUT_S.
    """
    topology = topology or from_settings(settings, "agg" if role == "agg" else "pd")
    check_topology(settings, topology)
    specs = server_specs(settings, role, topology)
    started: list[tuple[Runtime, ServerSpec]] = []
    try:
        for spec in specs:
            runtime = runtime_for(settings, spec.runtime)
            runtime.start(spec, run_id)
            started.append((runtime, spec))
            console.print(f"started {spec.name} ({spec.runtime}) for {spec.url}")
        for runtime, spec in started:
            seconds = wait_server_ready(
                runtime, spec, timeout_s=settings.ready_timeout_s, console=console
            )
            console.print(f"{spec.name} ready at {spec.url} after {seconds:.1f}s")
    except BaseException:
        for runtime, spec in started:
            runtime.stop(spec)
        raise
    return specs


def up_router(settings: Settings, *, detach: bool, run_id: str, console: Console,
              topology: Topology | None = None) -> RouterSpec:
    """Start the router: detached (wait until it routes to every worker) or in the foreground.

    Raises:
        ConfigError: a worker does not answer (nothing started).
        ServerError: the foreground router exited with an error.
    """
    if detach:
        return start_router(settings, run_id=run_id, console=console, topology=topology)
    spec = router_spec(settings)
    code = run_router_foreground(settings, run_id=run_id, console=console)
    if code != 0:
        last = runtime_for(settings, "process").log_tail(spec, 5)
        raise ServerError(f"router exited with code {code}; its last log lines:\n{last}")
    return spec


def up_mode(settings: Settings, topology: Topology, *, run_id: str, console: Console) -> str:
    """Start everything ``topology`` needs, wait until ready; return the URL the client uses.

    On failure, what this call started is stopped again.
    """
    started: list[Role] = []
    try:
        for role in topology.workers:
            started.append(role)
            up_role(settings, role, run_id=run_id, console=console, topology=topology)
        if not topology.routed:
            return server_specs(settings, "agg", topology)[0].url
        return up_router(settings, detach=True, run_id=run_id, console=console,
                         topology=topology).url  # fmt: skip
    except BaseException:
        for role in started:
            for spec in server_specs(settings, role, topology):
                runtime_for(settings, spec.runtime).stop(spec)
        raise


def down(settings: Settings, console: Console, run_id: str | None = None) -> int:
    """Stop what this project started (router first); return how many were running.

    Args:
        settings: which RUN_DIR (pid files) and docker engines to look at.
        console: where each stop is reported.
        run_id: only what that run started (a compare's teardown); None: everything of ours,
            also of other runs and older settings (``invoke down``).
    """
    stopped = 0
    for runtime in runtimes_in_use(settings):
        for found in runtime.stop_run(run_id):
            if found.state != "running":
                console.print(f"{found.name} had already {found.shown_state} ({found.where})")
                continue
            extra = ", container removed" if runtime.name == "docker" else ""
            console.print(f"stopped {found.name} ({runtime.name}, {found.where}{extra})")
            stopped += 1
    if stopped == 0 and run_id is None:
        console.print("nothing of ours was running")
    return stopped


def status(settings: Settings) -> list[Instance]:
    """Everything this project started and still knows of, with its state."""
    return [i for runtime in runtimes_in_use(settings) for i in runtime.instances()]


def log_lines(settings: Settings, name: str, *, follow: bool) -> Iterator[str]:
    """The log of one server or the router: ``agg``, ``prefill``, ``decode-1``, ``router``...

    Raises:
        ConfigError: unknown name, or a role with several workers (names them).
    """
    if name == ROUTER_NAME:
        return runtime_for(settings, "process").log_lines(router_spec(settings), follow=follow)
    specs = [s for role in ROLES for s in server_specs(settings, role)]
    matches = [s for s in specs if name in (s.name, s.name.removeprefix("sglang-"))]
    if not matches:
        matches = [s for s in specs if s.role == name]
    if len(matches) != 1:
        names = ", ".join(s.name.removeprefix("sglang-") for s in (matches or specs))
        what = f"{name} has {len(matches)} workers" if matches else f"unknown server {name!r}"
        raise ConfigError(f"logs {name}: {what}; name one of: {names}, router")
    spec = matches[0]
    return runtime_for(settings, spec.runtime).log_lines(spec, follow=follow)
