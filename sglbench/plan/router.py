"""Pure builder: Settings + topology -> the router's command (plain data, no I/O).

PD: the original ``22_run_router_pd.sh``, plus the bootstrap port of every prefill worker made
explicit (no router reads it from the worker). Agg with several replicas: the same router in
regular mode (``--worker-urls``), so the bench client always has one URL. Both: the Rust
routers' Prometheus listener is private (both bind 0.0.0.0:29000 by default, so a second router
would panic) and ROUTER_POLICY, when set, is their ``--policy``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sglbench.plan.servers import Command, server_specs
from sglbench.plan.topology import from_settings
from sglbench.settings import Settings
from sglbench.types import RouterImpl, Topology

ROUTER_NAME = "router"
ROUTER_MODULES: dict[RouterImpl, str] = {
    "rust": "sglang_router.launch_router",
    "mini-lb": "sglang_router.launch_router",
    "smg": "smg.launch_router",
}
# The Rust routers colour their log lines, which a log file only garbles.
_ROUTER_ENV = (("NO_COLOR", "1"),)


@dataclass(frozen=True, kw_only=True)
class RouterSpec(Command):
    """The router process in front of a mode's workers."""

    impl: RouterImpl
    workers: int  # workers it must register before it is ready


def router_spec(settings: Settings, topology: Topology | None = None) -> RouterSpec:
    """The router of ``topology`` (default: PD with NUM_PREFILL / NUM_DECODE)."""
    topology = topology or from_settings(settings, "pd")
    if topology.kind == "agg":
        args = ["--worker-urls", *(s.url for s in server_specs(settings, "agg", topology))]
    else:
        args = ["--mini-lb"] if settings.router_impl == "mini-lb" else []
        args.append("--pd-disaggregation")
        for spec in server_specs(settings, "prefill", topology):
            args += ["--prefill", spec.url, str(spec.bootstrap_port)]
        for spec in server_specs(settings, "decode", topology):
            args += ["--decode", spec.url]
    if settings.router_policy and settings.router_impl != "mini-lb":
        args += ["--policy", settings.router_policy]
    args += ["--host", settings.router_bind_host, "--port", str(settings.router_port)]
    if settings.router_impl != "mini-lb":
        args += ["--prometheus-host", "127.0.0.1",
                 "--prometheus-port", str(settings.router_prometheus_port)]
    args += shlex.split(settings.router_extra_args)
    return RouterSpec(
        name=ROUTER_NAME,
        role="router",
        impl=settings.router_impl,
        module=ROUTER_MODULES[settings.router_impl],
        args=tuple(args),
        host=settings.router_host,
        port=settings.router_port,
        env=_ROUTER_ENV,
        workers=sum(topology.workers.values()),
    )
