"""Client headroom and arrivals: lateness against the schedule, our bursty schedule, findings.

The real client's generators are covered by the integration tests (``test_workloads_run``);
here a stand-in with the client's structure (yield, then sleep an exponential draw) checks the
recorder's arithmetic, and the gamma schedule's statistics are checked on their intended times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from sglbench.execute.arrivals import REAL_EXPONENTIAL, Schedule, gamma_arrivals, watch_poisson
from sglbench.record.observation import ClientLateness
from sglbench.results import point_checks


async def drain(requests: AsyncIterator[Any]) -> list[Any]:
    return [r async for r in requests]


async def client_like(count: int, rate: float, stall_s: float = 0.0) -> AsyncIterator[int]:
    """Stand-in for SGLang's get_request: yield, then sleep an exponential draw (relative)."""
    for i in range(count):
        yield i
        if i == 0 and stall_s:
            time.sleep(stall_s)  # a busy event loop: every later request is late by this much
        await asyncio.sleep(np.random.exponential(1.0 / rate))


def test_poisson_lateness_is_measured_against_the_clients_own_draws() -> None:
    np.random.seed(1)
    schedule = Schedule("poisson")
    sent = asyncio.run(drain(watch_poisson(client_like(20, rate=200.0, stall_s=0.05), 200.0,
                                           schedule)))  # fmt: skip
    assert sent == list(range(20))  # the client's requests, unchanged, in order
    summary = schedule.summary()
    assert summary is not None and summary["requests"] == 20
    assert summary["median_ms"] >= 45.0  # the 50 ms stall made the rest late
    assert np.random.exponential is REAL_EXPONENTIAL  # restored


def test_the_recorder_does_not_change_the_schedule() -> None:
    np.random.seed(7)
    expected = [float(np.random.exponential(0.01)) for _ in range(5)]
    np.random.seed(7)
    schedule = Schedule("poisson")
    asyncio.run(drain(watch_poisson(client_like(6, rate=100.0), 100.0, schedule)))
    gaps = np.diff(schedule.intended)
    assert gaps.tolist() == pytest.approx(expected)  # the same draws, in the same order


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (0.25, 2.0)])
def test_gamma_schedule_has_the_asked_rate_and_burstiness(burstiness: float, cv: float) -> None:
    schedule = Schedule("gamma")
    # A high rate keeps the test short; the intended times do not depend on the sleeps.
    asyncio.run(drain(gamma_arrivals(list(range(20000)), 1e6, burstiness, 5, schedule)))
    gaps = np.diff(schedule.intended)
    assert gaps.mean() == pytest.approx(1e-6, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)  # gamma CV = 1/sqrt(shape)


def test_the_same_seed_gives_every_mode_the_same_bursts() -> None:
    first, second = Schedule("gamma"), Schedule("gamma")
    for schedule in (first, second):
        asyncio.run(drain(gamma_arrivals(list(range(50)), 5000.0, 0.3, 11, schedule)))
    assert np.diff(first.intended) == pytest.approx(np.diff(second.intended))


def late(**fields: float) -> dict[str, Any]:
    summary = ClientLateness(arrivals="poisson", requests=101, median_ms=1.0, p90_ms=2.0,
                             p99_ms=3.0, max_ms=4.0, scheduled_s=10.0, sent_s=10.1)
    summary = summary.model_copy(update=fields)
    return {"late_arrivals": summary.arrivals, "late_overrun": summary.overrun,
            "late_median_ms": summary.median_ms, "late_gap_ms": summary.mean_gap_ms}


def test_lateness_within_the_thresholds_is_no_finding() -> None:
    assert point_checks.client_late_message(late()) is None  # 1% over, median 1 ms of 100 ms


def test_a_client_that_fell_behind_its_schedule_is_a_finding() -> None:
    message = point_checks.client_late_message(late(sent_s=10.6))
    assert message is not None and "6% after its poisson schedule ended (over 5%)" in message
    bunched = point_checks.client_late_message(late(median_ms=150.0))
    assert bunched is not None and "over 1 mean inter-arrival gap (100 ms)" in bunched
    assert point_checks.client_late_message({**late(sent_s=20.0),
                                             "late_arrivals": "all at once"}) is None


def test_warm_cache_findings() -> None:
    failed = point_checks.warm_cache_message({"cache_flushed": False,
                                              "flush_failed": "sglang-decode"})
    assert failed is not None and "sglang-decode did not answer 200" in failed
    repeat = point_checks.warm_cache_message({"dataset": "random-ids", "prefix_hit_rate": 0.9})
    assert repeat is not None and "90% of prompt tokens were prefix-cache hits" in repeat
    shared = {"dataset": "generated-shared-prefix", "prefix_hit_rate": 0.9, "cache_flushed": True}
    assert point_checks.warm_cache_message(shared) is None  # shared prefixes hit by design
