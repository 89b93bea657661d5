"""Liveness between points: every worker and the router of a mode alive and answering.

Checked before each point, so a server that died mid-sweep ends its mode at once with one line
naming it, its exit code and its last log lines, instead of every remaining point failing slowly.
"""

from __future__ import annotations

from sglbench.errors import ServerError
from sglbench.execute.http import http_probe
from sglbench.execute.readiness import LOG_LINES, exit_text, with_log
from sglbench.execute.runtimes import runtime_for
from sglbench.plan.router import router_spec
from sglbench.plan.servers import Command, server_specs
from sglbench.settings import Settings
from sglbench.types import Topology

# A server that runs but does not answer /health within this is as good as dead for a point.
HEALTH_TIMEOUT_S = 10.0


class ServerDied(ServerError):
    """A server or the router of the mode being measured stopped or stopped answering."""


def mode_services(settings: Settings, topology: Topology) -> list[Command]:
    """Every worker of ``topology`` and, when it has one, its router."""
    found: list[Command] = [spec for role in topology.workers
                            for spec in server_specs(settings, role, topology)]  # fmt: skip
    if topology.routed:
        found.append(router_spec(settings, topology))
    return found


def check_alive(settings: Settings, topology: Topology, during: str) -> None:
    """Raise ``ServerDied`` naming the first worker or router that exited or does not answer.

    Args:
        settings: the run's settings.
        topology: the mode being measured.
        during: the point about to be measured (named in the message).
    """
    for spec in mode_services(settings, topology):
        runtime = runtime_for(settings, spec.runtime)
        code = runtime.exit_code(spec)
        if code is not None:
            raise ServerDied(with_log(f"{spec.name} exited ({exit_text(code)}) during {during}",
                                      runtime.log_tail(spec, LOG_LINES)))  # fmt: skip
        probe = http_probe(f"{spec.url}/health", timeout_s=HEALTH_TIMEOUT_S)
        if probe.status in ("connection refused", "timed out"):
            raise ServerDied(with_log(f"{spec.name} at {spec.url} does not answer /health "
                                      f"({probe.status}) during {during}",
                                      runtime.log_tail(spec, LOG_LINES)))  # fmt: skip
