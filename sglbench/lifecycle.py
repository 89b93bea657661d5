"""Bring servers and the router up and down, whatever runtime each role uses.

``up_*`` start, wait until ready and say where each server listens; if a start or readiness fails,
what that call started is stopped again, so a failed ``up`` leaves nothing behind. ``down`` and
``status`` see only what this project started (pid files, container labels); ``down`` with a
run id only what that run started.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console

from sglbench.errors import ConfigError, ServerError
from sglbench.readiness import wait_server_ready
from sglbench.router import (
    ROUTER_NAME,
    describe_router,
    run_router_foreground,
    start_router,
)
from sglbench.runtime import Instance, Runtime, runtime_for
from sglbench.runtime.process import ProcessRuntime
from sglbench.settings import ROLES, Role, Settings
from sglbench.specs import Mode, RouterSpec, ServerSpec, router_spec, server_specs

if TYPE_CHECKING:
    from sglbench.runtime.docker import DockerRuntime

MODE_ROLES: dict[Mode, tuple[Role, ...]] = {"agg": ("agg",), "pd": ("prefill", "decode")}


def new_run_id() -> str:
    """A run id that sorts by time, e.g. ``20261129-051700``."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def describe_role(settings: Settings, role: Role) -> list[str]:
    """The command of every worker of ``role`` (``--dry-run``), one line each."""
    lines = []
    for spec in server_specs(settings, role):
        runtime = runtime_for(settings, spec.runtime)
        lines.append(f"# {spec.name} ({spec.runtime}) -> {spec.url}\n{runtime.describe(spec)}")
    return lines


def describe_mode(settings: Settings, mode: Mode) -> list[str]:
    """Everything ``up_mode`` would start, in order (``--dry-run``)."""
    lines = [line for role in MODE_ROLES[mode] for line in describe_role(settings, role)]
    if mode == "pd":
        lines.append(f"# router ({settings.router_impl}) -> {router_spec(settings).url}\n"
                     f"{describe_router(settings)}")  # fmt: skip
    return lines


def up_role(settings: Settings, role: Role, *, run_id: str, console: Console) -> list[ServerSpec]:
    """Start every worker of ``role``, wait until each answers ``/health_generate``.

    Workers start together and are then awaited one by one, so N workers take about as long as
    one. On any failure the workers started here are stopped again.

    Raises:
        ServerError: a worker could not start, or its port is taken by someone else.
        ReadinessError: a worker exited or was not ready before READY_TIMEOUT_S.
    """
    specs = server_specs(settings, role)
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


def up_router(settings: Settings, *, detach: bool, run_id: str, console: Console) -> RouterSpec:
    """Start the PD router: detached (wait until it routes to every worker) or in the foreground.

    Raises:
        ConfigError: a prefill or decode worker does not answer (nothing started).
        ServerError: the foreground router exited with an error.
    """
    if detach:
        return start_router(settings, run_id=run_id, console=console)
    code = run_router_foreground(settings, run_id=run_id, console=console)
    if code != 0:
        log = ProcessRuntime(settings).log_path(ROUTER_NAME)
        raise ServerError(f"router exited with code {code}; see its log {log}")
    return router_spec(settings)


def up_mode(settings: Settings, mode: Mode, *, run_id: str, console: Console) -> str:
    """Start everything ``mode`` needs, wait until ready; return the URL the bench client uses.

    On failure, what this call started is stopped again.
    """
    started: list[Role] = []
    try:
        for role in MODE_ROLES[mode]:
            started.append(role)
            up_role(settings, role, run_id=run_id, console=console)
        if mode == "agg":
            return server_specs(settings, "agg")[0].url
        return up_router(settings, detach=True, run_id=run_id, console=console).url
    except BaseException:
        _stop_roles(settings, started)
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
    process = ProcessRuntime(settings)
    records = [r for r in process.records() if run_id is None or r.run_id == run_id]
    for record in sorted(records, key=lambda r: r.name != ROUTER_NAME):
        if process.stop_name(record.name):
            console.print(f"stopped {record.name} (pid {record.pid})")
            stopped += 1
        else:
            console.print(f"{record.name} had already exited (pid {record.pid})")
    if any(settings.role_runtime(role) == "docker" for role in ROLES):
        for name in _docker_runtime(settings).stop_all(run_id=run_id):
            console.print(f"stopped {name} (docker, container removed)")
            stopped += 1
    if stopped == 0:
        console.print(f"nothing of run {run_id} was running" if run_id
                      else "nothing of ours was running")
    return stopped


def status(settings: Settings) -> list[Instance]:
    """Everything this project started and still knows of, with its state."""
    found = ProcessRuntime(settings).instances()
    if any(settings.role_runtime(role) == "docker" for role in ROLES):
        found += runtime_for(settings, "docker").instances()
    return found


def log_lines(settings: Settings, name: str, *, follow: bool) -> Iterator[str]:
    """The log of one server or the router: ``agg``, ``prefill``, ``decode-1``, ``router``...

    Raises:
        ConfigError: unknown name, or a role with several workers (names them).
    """
    if name == ROUTER_NAME:
        return ProcessRuntime(settings).follow_log(ROUTER_NAME, follow=follow)
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


def _stop_roles(settings: Settings, roles: list[Role]) -> None:
    for role in roles:
        for spec in server_specs(settings, role):
            runtime_for(settings, spec.runtime).stop(spec)


def _docker_runtime(settings: Settings) -> DockerRuntime:
    """The docker runtime itself (``down`` uses ``stop_all``: containers of older settings too)."""
    runtime = runtime_for(settings, "docker")
    from sglbench.runtime.docker import DockerRuntime  # loaded by runtime_for just now

    assert isinstance(runtime, DockerRuntime)
    return runtime
