"""Inside the client worker: hooks on SGLang's bench client for CPU, lateness and the phases.

Installed once per worker by ``instrument(serving)``; ``sglbench.execute.client_worker`` runs the
points. All hooks replace module globals of ``sglang.benchmark.serving`` that its functions
look up at call time; none copies the client's code.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
import psutil

from sglbench.execute import arrivals as arrive

measured: dict[str, float] = {}
# The point being run: {"hooks": bool, "arrivals": {...} | None, "schedule": Schedule}.
point: dict[str, Any] = {}
channel: list[IO[str]] = []  # the protocol channel, once main() has opened it


def _ask_parent(event: str) -> None:
    """Tell the parent a phase was reached and wait for its answer (it scrapes meanwhile)."""
    if channel:
        send(channel[0], {"event": event})
        sys.stdin.readline()


def cpu_seconds() -> float:
    """CPU seconds of this process and its children."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def host_idle_total() -> tuple[float, float]:
    """(idle, total) CPU seconds of the whole host, every core."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(idle), float(sum(times))


def host_busy(before: tuple[float, float]) -> float:
    """Share of the host's CPU busy since ``before`` (a ``host_idle_total()``)."""
    idle, total = host_idle_total()
    span = total - before[1]
    return 1.0 - (idle - before[0]) / span if span > 0 else 0.0


def _begin_measuring() -> None:
    idle, total = host_idle_total()
    measured.update(cpu0=cpu_seconds(), t0=time.perf_counter(), idle0=idle, total0=total)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def instrument(serving: Any) -> None:
    """Hook the client's own functions to measure its request phase and reuse its tokenizer.

    The request phase starts when ``benchmark()`` creates its request generator
    (``get_request``, or mooncake's) and ends when it calls ``calculate_metrics``, exactly the
    span the client reports as ``duration``; the warm-up, a fixed 1 s pause and the retokenizing
    metrics around it would skew the CPU share either way. The generators are wrapped to record
    lateness (``sglbench.execute.arrivals``); ``flush_server_cache`` and the end of the requests
    tell the parent (``_ask_parent``) when the point's hooks are on. The tokenizer load (about
    5 s for Qwen's with transformers 5) is paid once per worker instead of once per point.
    """
    get_request = getattr(serving, "get_request", None)
    calculate_metrics = getattr(serving, "calculate_metrics", None)
    get_tokenizer = getattr(serving, "get_tokenizer", None)
    if get_request is not None and calculate_metrics is not None:

        def start_requests(*args: Any, **kwargs: Any) -> Any:
            _begin_measuring()
            rows, rate = _arg(args, kwargs, 0, "input_requests"), _arg(args, kwargs, 1,
                                                                        "request_rate")
            bursty = point.get("arrivals")
            if bursty and rate is not None and np.isfinite(rate):
                schedule = point["schedule"] = arrive.Schedule("gamma")
                return arrive.gamma_arrivals(rows, float(rate), float(bursty["burstiness"]),
                                             int(bursty["seed"]), schedule)  # fmt: skip
            kind = "all at once" if rate is None or not np.isfinite(rate) else "poisson"
            schedule = point["schedule"] = arrive.Schedule(kind)
            return arrive.watch_poisson(get_request(*args, **kwargs), float(rate or np.inf),
                                        schedule)  # fmt: skip

        def end_requests(*args: Any, **kwargs: Any) -> Any:
            if "t0" in measured:
                measured.update(
                    cpu_s=cpu_seconds() - measured["cpu0"],
                    measured_s=time.perf_counter() - measured["t0"],
                    host_busy=host_busy((measured["idle0"], measured["total0"])))
            if point.get("hooks"):
                _ask_parent("measured")  # the duration was taken already: this costs nothing
            return calculate_metrics(*args, **kwargs)

        # run_benchmark()/benchmark() look these up in their module's globals at call time.
        serving.get_request = start_requests
        serving.calculate_metrics = end_requests
    _hook_mooncake(serving)
    _hook_flush(serving)
    if get_tokenizer is not None:
        serving.get_tokenizer = functools.lru_cache(maxsize=4)(get_tokenizer)


def _hook_mooncake(serving: Any) -> None:
    """Mooncake's trace generator: measured and watched like ``get_request``."""
    over_time = getattr(serving, "get_mooncake_request_over_time", None)
    if over_time is None:
        return

    def trace_requests(*args: Any, **kwargs: Any) -> Any:
        _begin_measuring()
        records = list(_arg(args, kwargs, 0, "input_requests") or [])
        slowdown = float(_arg(args, kwargs, 2, "slowdown_factor") or 1.0)
        rounds = int(_arg(args, kwargs, 3, "num_rounds") or 1)
        schedule = point["schedule"] = arrive.Schedule("trace")
        return arrive.watch_trace(over_time(*args, **kwargs), records, slowdown, rounds,
                                  schedule)  # fmt: skip

    serving.get_mooncake_request_over_time = trace_requests


def _hook_flush(serving: Any) -> None:
    """With hooks on, the parent flushes every worker instead of the client's one URL."""
    flush = getattr(serving, "flush_server_cache", None)
    if flush is None:
        return

    def flush_every_worker(*args: Any, **kwargs: Any) -> None:
        if not point.get("hooks"):
            flush(*args, **kwargs)
            return
        _ask_parent("warmed")

    serving.flush_server_cache = flush_every_worker


def send(channel: IO[str], message: Mapping[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def restore() -> None:
    """Undo what a point's generator wrapper may have left behind (the Poisson recorder)."""
    np.random.exponential = arrive.REAL_EXPONENTIAL

