"""Inside the client worker: when requests should have been sent, when they were, and bursts.

SGLang 0.5.23's client sends requests from an async generator: ``get_request`` sleeps
``numpy.random.exponential(1/rate)`` after each yield (relative sleeps, so any oversleep adds
up), mooncake's ``get_mooncake_request_over_time`` sleeps to each trace timestamp. Neither
records when a request was meant to go. The wrappers here iterate the client's own generator
unchanged and note, at each yield, the intended and the actual time:

* Poisson: while the generator runs, ``numpy.random.exponential`` is replaced by a recorder that
  returns the real draw (same RNG consumption, same schedule); the i-th request's intended time
  is the first yield's time plus the i draws so far.
* trace: the intended time is the record's timestamp, scaled by the slowdown factor, after the
  generator's start.
* bursty (ours, not the client's: 0.5.23 has no ``--burstiness``): gamma inter-arrival times of
  shape ``burstiness`` and mean ``1/rate`` from a generator seeded with the run's seed, sent at
  absolute deadlines (no drift). Shape 1 is Poisson; below 1, requests come in clumps.

Each point's ``Schedule.summary()`` goes back to the parent as the point's lateness.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

# The real function, kept for the recorder and to restore after a point that did not finish.
REAL_EXPONENTIAL: Callable[..., Any] = np.random.exponential


class Schedule:
    """Intended and actual send times of one point's requests (perf_counter seconds)."""

    def __init__(self, arrivals: str) -> None:
        self.arrivals = arrivals
        self.intended: list[float] = []
        self.actual: list[float] = []

    def sent(self, intended: float) -> None:
        """Record one request yielded now that was meant to go at ``intended``."""
        self.intended.append(intended)
        self.actual.append(time.perf_counter())

    def summary(self) -> dict[str, Any] | None:
        """Lateness figures in ms and the two spans in s (the fields of ``ClientLateness``)."""
        if not self.actual:
            return None
        late = np.maximum(np.array(self.actual) - np.array(self.intended), 0.0) * 1000.0
        return {
            "arrivals": self.arrivals, "requests": len(late),
            "median_ms": round(float(np.median(late)), 3),
            "p90_ms": round(float(np.percentile(late, 90)), 3),
            "p99_ms": round(float(np.percentile(late, 99)), 3),
            "max_ms": round(float(late.max()), 3),
            "scheduled_s": round(self.intended[-1] - self.intended[0], 4),
            "sent_s": round(self.actual[-1] - self.actual[0], 4),
        }  # fmt: skip


async def watch_poisson(requests: AsyncIterator[Any], rate: float,
                        schedule: Schedule) -> AsyncIterator[Any]:
    """Yield the client's own requests, recording their lateness against its Poisson draws."""
    draws: list[float] = []

    def recorder(*args: Any, **kwargs: Any) -> Any:
        value = REAL_EXPONENTIAL(*args, **kwargs)
        draws.append(float(value))
        return value

    np.random.exponential = recorder
    try:
        first: float | None = None
        async for request in requests:
            now = time.perf_counter()
            first = now if first is None else first
            # With rate inf the client draws nothing: every request is meant to go at once.
            schedule.sent(first + (sum(draws) if rate != float("inf") else 0.0))
            yield request
    finally:
        np.random.exponential = REAL_EXPONENTIAL


async def watch_trace(requests: AsyncIterator[Any], records: Sequence[dict[str, Any]],
                      slowdown: float, rounds: int, schedule: Schedule) -> AsyncIterator[Any]:
    """Yield mooncake's requests, recording lateness against the trace's (sorted) timestamps.

    The client yields a session's ``rounds`` requests together at the session's time, measured
    from its first step, which is where this generator's first step starts too.
    """
    stamps = sorted(float(r["timestamp"]) for r in records) or [0.0]
    start, n = time.perf_counter(), 0
    async for request in requests:
        session = min(n // max(rounds, 1), len(stamps) - 1)
        schedule.sent(start + (stamps[session] - stamps[0]) / 1000.0 * slowdown)
        n += 1
        yield request


async def gamma_arrivals(requests: Sequence[Any], rate: float, burstiness: float, seed: int,
                         schedule: Schedule) -> AsyncIterator[Any]:
    """Our bursty schedule: gamma(shape=burstiness, mean 1/rate) gaps, absolute deadlines."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), size=max(len(requests) - 1, 0))
    start, offset = time.perf_counter(), 0.0
    for i, request in enumerate(requests):
        if i:
            offset += float(gaps[i - 1])
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        schedule.sent(start + offset)
        yield request
