"""Pure builder: Settings -> the PD router's command (plain data, no I/O).

Beyond the original ``22_run_router_pd.sh``: the bootstrap port of every prefill worker is explicit
(no router reads it from the worker) and the Rust routers' Prometheus listener is private
(both bind 0.0.0.0:29000 by default, so a second router would panic).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sglbench.plan.servers import Command, server_specs
from sglbench.settings import Settings
from sglbench.types import RouterImpl

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
    """The PD router process in front of the prefill and decode workers."""

    impl: RouterImpl
    workers: int  # prefill + decode workers it must register before it is ready


def router_spec(settings: Settings) -> RouterSpec:
    """The PD router over every prefill and decode worker (bootstrap ports explicit)."""
    args: list[str] = ["--mini-lb"] if settings.router_impl == "mini-lb" else []
    args.append("--pd-disaggregation")
    for spec in server_specs(settings, "prefill"):
        args += ["--prefill", spec.url, str(spec.bootstrap_port)]
    for spec in server_specs(settings, "decode"):
        args += ["--decode", spec.url]
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
        workers=settings.num_prefill + settings.num_decode,
    )
