"""The PD router as a local process: in the foreground (as the original script) or detached.

Both ways go through the process runtime (pid file, log file) behind the ``Runtime`` protocol, so
``status``, ``logs router`` and ``down`` see the router like any server. Before starting, every
prefill and decode worker must answer: the routers themselves would start anyway and keep failing
requests (MiniLB) or report "insufficient healthy workers" forever (the Rust routers).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from rich.console import Console

from sglbench.errors import ConfigError
from sglbench.execute.http import Probe, http_get, http_probe
from sglbench.execute.readiness import wait_until
from sglbench.execute.runtime import Runtime
from sglbench.execute.runtimes import runtime_for
from sglbench.plan.router import RouterSpec, router_spec
from sglbench.plan.servers import server_specs
from sglbench.plan.topology import from_settings
from sglbench.settings import Settings
from sglbench.types import Topology

# The router only has to register workers that already answer; two minutes is generous.
ROUTER_READY_S = 120.0


def describe_router(settings: Settings, topology: Topology | None = None) -> str:
    """The router's command line (``--dry-run``), secret flag values masked."""
    return runtime_for(settings, "process").describe(router_spec(settings, topology))


def check_workers(settings: Settings, topology: Topology | None = None) -> None:
    """Every worker the router fronts must answer ``/health`` before the router starts.

    Raises:
        ConfigError: a worker does not answer; names it, its URL and the keys to fix.
    """
    topology = topology or from_settings(settings, "pd")
    for role in topology.workers:
        for spec in server_specs(settings, role, topology):
            probe = http_probe(f"{spec.url}/health", timeout_s=5.0)
            if not probe.ok:
                key = role.upper()
                raise ConfigError(
                    f"{key}_HOST/{key}_PORT: {role} worker {spec.name} at {spec.url} does not "
                    f"answer ({probe.status}); start it with `invoke {role}` or fix "
                    f"{key}_HOST/{key}_PORT"
                )


def start_router(settings: Settings, *, run_id: str, console: Console,
                 topology: Topology | None = None) -> RouterSpec:
    """Start the router in the background and wait until it routes to every worker.

    Raises:
        ConfigError: a worker does not answer (nothing started).
        ReadinessError: the router exited or did not become ready (it is stopped then).
    """
    check_workers(settings, topology)
    spec = router_spec(settings, topology)
    runtime = runtime_for(settings, "process")
    runtime.start(spec, run_id)
    try:
        seconds = wait_router_ready(settings, spec, runtime, console)
    except BaseException:
        runtime.stop(spec)
        raise
    console.print(f"router ({spec.impl}) ready at {spec.url} after {seconds:.1f}s")
    return spec


def run_router_foreground(settings: Settings, *, run_id: str, console: Console) -> int:
    """Start the router, show its log until it exits; Ctrl-C stops it. Returns its exit code."""
    spec = start_router(settings, run_id=run_id, console=console)
    runtime = runtime_for(settings, "process")
    interrupted = False
    try:
        with _sigterm_as_interrupt():
            console.print("router running in the foreground; Ctrl-C stops it")
            for line in runtime.log_lines(spec, follow=True):
                console.print(line, markup=False, highlight=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # The router runs in its own session, so the terminal's Ctrl-C does not reach it: we
        # stop it ourselves (also when anything else ends this function).
        code = runtime.exit_code(spec)
        runtime.stop(spec)
    if interrupted:
        console.print("router stopped")
        return 0
    return code if code is not None else 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a closing terminal) stops the router as cleanly as Ctrl-C does."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_router_ready(
    settings: Settings, spec: RouterSpec, runtime: Runtime, console: Console
) -> float:
    """Wait until the router answers and, for the Rust routers, has registered every worker."""
    return wait_until(
        f"router at {spec.url}",
        lambda: router_probe(spec, spec.workers),
        exit_code=lambda: runtime.exit_code(spec),
        log_tail=lambda: runtime.log_tail(spec),
        timeout_s=min(settings.ready_timeout_s, ROUTER_READY_S),
        console=console,
    )


def router_probe(spec: RouterSpec, expected_workers: int) -> Probe:
    """MiniLB: ``/health``. Rust routers: ``/readiness`` with every worker healthy.

    The Rust routers register workers in the background (about 1.6 s after they answer); until
    then ``/readiness`` answers 503 "insufficient healthy workers" and requests would fail.
    """
    if spec.impl == "mini-lb":
        return http_probe(f"{spec.url}/health", timeout_s=5.0)
    answer = http_get(f"{spec.url}/readiness", timeout_s=5.0)
    if answer.status is None:
        return Probe(False, answer.error)
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != 200:
        return Probe(False, f"{answer.status} {body.get('reason', '')}".strip())
    healthy = body.get("healthy_workers")
    if isinstance(healthy, int) and healthy < expected_workers:
        return Probe(False, f"{healthy}/{expected_workers} workers registered")
    return Probe(True, "200")
