"""Pure builder: what the harness flushes and scrapes around each point of a topology.

Every worker (agg replicas, every prefill and decode worker) at its own URL, not only through
the router: a router's ``/flush_cache`` fan-out is not something every router does in PD mode,
and the metrics are per worker. The router's Prometheus listener (the Rust routers and smg; not
MiniLB) is private to this host, on 127.0.0.1:ROUTER_PROMETHEUS_PORT (``plan.router``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sglbench.plan.servers import server_specs
from sglbench.record.metrics import EndpointRole
from sglbench.settings import Settings
from sglbench.types import Topology


@dataclass(frozen=True)
class Endpoint:
    """One server (or the router's metrics listener) the harness talks to around a point."""

    name: str  # sglang-prefill-0, router
    role: EndpointRole
    url: str  # base URL: /flush_cache and /metrics are appended


def worker_endpoints(settings: Settings, topology: Topology) -> list[Endpoint]:
    """Every worker of ``topology``, in role order."""
    return [Endpoint(spec.name, spec.role, spec.url)
            for role in topology.workers for spec in server_specs(settings, role, topology)]


def router_metrics(settings: Settings, topology: Topology) -> Endpoint | None:
    """The router's Prometheus listener, when the topology has a router that has one."""
    if not topology.routed or settings.router_impl == "mini-lb":
        return None
    return Endpoint("router", "router", f"http://127.0.0.1:{settings.router_prometheus_port}")


def observed_endpoints(settings: Settings, topology: Topology) -> tuple[Endpoint, ...]:
    """The workers, then the router's metrics listener (if any)."""
    router = router_metrics(settings, topology)
    return (*worker_endpoints(settings, topology), *([router] if router else []))
