"""Where the bench client sends its load, and whether that is a PD deployment.

Target: an explicit base URL, else the router at ROUTER_HOST:ROUTER_PORT when it answers (PD),
else the aggregated server at AGG_HOST:AGG_PORT; nothing answering is a BenchError.

PD detection for an explicit URL (``pd=None``), from what the URL answers:
    /server_info (else /get_server_info) with ``disaggregation_mode``: a worker, PD unless null
    /server_info or /get_server_info with ``prefill`` and ``decode`` lists: MiniLB, PD
    /server_info 200 without either: an aggregated server
    no worker's server_info (404, or the Rust router's own counters): a router, PD (the only
    routers this project starts sit in front of PD workers)
    nothing answers: BenchError
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sglbench.errors import BenchError
from sglbench.execute.http import http_get
from sglbench.plan.observe import Endpoint
from sglbench.settings import Settings
from sglbench.types import BenchMode

_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Target:
    """Where the client sends requests, and whether that is a PD deployment."""

    base_url: str
    pd: bool
    what: str  # for people: "router", "agg server", "given URL"
    # Every worker (and the router's metrics listener) behind it, for flushes and scrapes.
    endpoints: tuple[Endpoint, ...] = ()


def _pd_from_info(info: dict[str, Any]) -> bool | None:
    """PD-ness from a server_info body; None when the body does not say."""
    if "disaggregation_mode" in info:  # an SGLang worker (or the simulator)
        return str(info["disaggregation_mode"]).lower() not in ("null", "none")
    if "prefill" in info and "decode" in info:  # MiniLB's aggregate
        return True
    return None


def detect_pd(base_url: str) -> bool:
    """True if ``base_url`` serves PD (see the module docstring for the rules)."""
    for path in ("/server_info", "/get_server_info"):
        answer = http_get(base_url + path, timeout_s=_TIMEOUT_S)
        if answer.status is None:
            raise BenchError(f"nothing answers at {base_url}; start the server (invoke agg, or "
                             "invoke prefill/decode/pd-router) or fix --base-url")
        info = answer.body
        if answer.status == 200 and isinstance(info, dict):
            pd = _pd_from_info(info)
            if pd is not None:
                return pd
            if path == "/server_info":
                return False  # a server_info without PD fields: an aggregated server
    # No worker's server_info: a router (sglang-router answers /get_server_info with its own
    # counters, smg and others 404); this project only starts routers in front of PD workers.
    return True


def _pd_of(mode: BenchMode) -> bool | None:
    return None if mode == "auto" else mode == "pd"


def detect_target(settings: Settings, base_url: str | None, mode: BenchMode) -> Target:
    """The URL to benchmark and its PD-ness, given what the user said (``auto``: detect)."""
    pd = _pd_of(mode)
    if base_url:
        url = base_url.rstrip("/")
        return Target(url, detect_pd(url) if pd is None else pd, "given URL")
    router = f"http://{settings.router_host}:{settings.router_port}"
    agg = f"http://{settings.agg_host}:{settings.agg_port}"
    # An explicit mode chooses the URL; only "auto" looks at what answers.
    if pd is not None:
        url, what = (router, "router") if pd else (agg, "agg server")
        if not _answers(url):
            raise BenchError(f"nothing answers at the {what} ({url}); start it "
                             f"({'invoke prefill/decode/pd-router' if pd else 'invoke agg'}) "
                             "or give --base-url")
        return Target(url, pd, what)
    if _answers(router):
        return Target(router, True, "router")
    if not _answers(agg):
        raise BenchError(f"nothing answers at the router ({router}) or the agg server ({agg}); "
                         "start one (invoke agg, or invoke prefill/decode/pd-router) or give "
                         "--base-url")
    return Target(agg, False, "agg server")


def planned_target(settings: Settings, base_url: str | None,
                   mode: BenchMode) -> tuple[Target, list[str]]:
    """What a dry run shows instead of ``detect_target``: no probe, and comment lines on what
    detection would decide when it runs.
    """
    pd = _pd_of(mode)
    router = f"http://{settings.router_host}:{settings.router_port}"
    agg = f"http://{settings.agg_host}:{settings.agg_port}"
    if base_url:
        url = base_url.rstrip("/")
        notes = [] if pd is not None else [
            f"# --pd-separated is added when {url} turns out to serve PD (detected when run)"]
        return Target(url, bool(pd), "given URL"), notes
    if pd is not None:
        return (Target(router, True, "router") if pd else Target(agg, False, "agg server")), []
    return Target(agg, False, "agg server"), [
        f"# a router answering at ROUTER_HOST:ROUTER_PORT ({router}) would be used instead, "
        "with --pd-separated"]


def _answers(url: str) -> bool:
    return http_get(url + "/health", timeout_s=_TIMEOUT_S).status is not None
