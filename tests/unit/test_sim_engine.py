"""The simulator's continuous-batching engine, on a real event loop with a small time scale."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from sglbench.errors import ConfigError
from sglbench.sim.engine import (
    Engine,
    EngineConfig,
    EngineStopped,
    GenRequest,
    Role,
    TokenEvent,
    TokenStream,
)
from sglbench.sim.profiles import load_profile

PROFILE = load_profile("gh200-qwen2.5-3b")
SCALE = 0.05  # a 4 ms decode step takes 0.2 ms: every test runs in milliseconds
_T = TypeVar("_T")


def make(role: Role = "null", **kwargs: Any) -> Engine:
    return Engine(EngineConfig(role=role, profile=PROFILE, time_scale=SCALE, **kwargs))


def run(engine: Engine, body: Callable[[Engine], Awaitable[_T]]) -> _T:
    """Run ``body`` against a started engine on a fresh loop; always stop the engine."""

    async def main() -> _T:
        await engine.start()
        try:
            return await asyncio.wait_for(body(engine), timeout=10)
        finally:
            await engine.stop()

    return asyncio.run(main())


async def collect(stream: TokenStream) -> list[tuple[TokenEvent, float]]:
    """Every event with the loop time it arrived at."""
    loop = asyncio.get_running_loop()
    return [(event, loop.time()) async for event in stream]


async def gather(*aws: Awaitable[_T]) -> list[_T]:
    return list(await asyncio.gather(*aws))


def test_aggregated_request_yields_every_token_in_order_with_rising_deadlines() -> None:
    got = run(make(), lambda e: collect(e.generate(GenRequest("a", 40, 12))))
    events = [event for event, _ in got]
    assert [e.index for e in events] == list(range(12))
    assert [e.finished for e in events] == [False] * 11 + [True]
    deadlines = [e.deadline for e in events]
    assert deadlines == sorted(deadlines) and len(set(deadlines)) == 12
    # Tokens are never delivered before the model says they exist.
    assert all(arrived >= event.deadline - 1e-6 for event, arrived in got)


def test_first_token_waits_for_the_prefill_and_later_ones_one_decode_step_each() -> None:
    async def body(engine: Engine) -> tuple[float, list[float]]:
        start = asyncio.get_running_loop().time()
        events = [event for event, _ in await collect(engine.generate(GenRequest("a", 64, 6)))]
        gaps = [b.deadline - a.deadline for a, b in itertools.pairwise(events)]
        return events[0].deadline - start, gaps

    ttft, gaps = run(make(), body)
    eff = PROFILE.efficiency
    assert ttft >= (eff.request_latency_ms + eff.prefill_overhead_ms) / 1e3 * SCALE * 0.97
    assert all(gap < ttft / 2 for gap in gaps)
    assert max(gaps) < 1.1 * min(gaps)


def test_requests_queue_when_the_kv_cache_is_full() -> None:
    async def body(engine: Engine) -> tuple[list[TokenEvent], list[TokenEvent], int]:
        first = asyncio.ensure_future(collect(engine.generate(GenRequest("a", 50, 40))))
        second = asyncio.ensure_future(collect(engine.generate(GenRequest("b", 20, 20))))
        while engine.stats().running == 0:
            await asyncio.sleep(0)
        queued = engine.stats().queued
        a, b = await gather(first, second)
        return [e for e, _ in a], [e for e, _ in b], queued

    a, b, queued = run(make(max_total_tokens=100), body)
    assert queued == 1  # 50 + 40 tokens reserved: 20 + 20 more do not fit in 100
    assert b[0].deadline > a[-1].deadline
    assert len(b) == 20


def test_without_a_kv_limit_requests_run_together() -> None:
    async def body(engine: Engine) -> list[list[tuple[TokenEvent, float]]]:
        return await gather(
            *(collect(engine.generate(GenRequest(f"r{i}", 30, 10))) for i in range(4))
        )

    streams = run(make(), body)
    finish = [s[-1][0].deadline for s in streams]
    starts = [s[0][0].deadline for s in streams]
    assert max(starts) < min(finish)  # all four were decoding at the same time


def test_max_running_requests_limits_the_batch() -> None:
    async def body(engine: Engine) -> list[list[tuple[TokenEvent, float]]]:
        return await gather(
            *(collect(engine.generate(GenRequest(f"r{i}", 30, 10))) for i in range(3))
        )

    streams = run(make(max_running_requests=1), body)
    spans = sorted((s[0][0].deadline, s[-1][0].deadline) for s in streams)
    assert all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(spans))


def test_a_new_prefill_stalls_running_decodes_in_aggregated_mode() -> None:
    async def body(engine: Engine) -> list[float]:
        first = asyncio.ensure_future(collect(engine.generate(GenRequest("a", 32, 400))))
        while engine.stats().generation_tokens_total < 20:
            await asyncio.sleep(0)
        await collect(engine.generate(GenRequest("b", 2000, 2)))
        events = [e for e, _ in await first]
        return [b.deadline - a.deadline for a, b in itertools.pairwise(events)]

    gaps = run(make(), body)
    assert max(gaps) > 4 * statistics.median(gaps)


def test_long_prompts_are_chunked_over_several_prefill_passes() -> None:
    async def ttft(engine: Engine) -> float:
        start = asyncio.get_running_loop().time()
        events = await collect(engine.generate(GenRequest("a", 4000, 1)))
        return events[0][0].deadline - start

    whole = run(make(), ttft)
    chunked = run(make(chunked_prefill_size=1000), ttft)
    # Four passes pay the fixed prefill cost four times.
    extra = 3 * PROFILE.efficiency.prefill_overhead_ms / 1e3 * SCALE
    assert chunked > whole + 0.8 * extra


def test_prefill_role_yields_exactly_one_finished_event() -> None:
    got = run(make("prefill"), lambda e: collect(e.generate(GenRequest("a", 300, 50))))
    assert [(e.index, e.finished) for e, _ in got] == [(0, True)]


def test_decode_role_with_kv_emits_the_first_token_at_admission() -> None:
    async def body(engine: Engine) -> tuple[float, list[TokenEvent]]:
        start = asyncio.get_running_loop().time()
        stream = engine.generate(GenRequest("a", 3000, 5, kv_ready=True))
        return start, [e for e, _ in await collect(stream)]

    start, events = run(make("decode"), body)
    assert [e.index for e in events] == list(range(5))
    admission = PROFILE.efficiency.request_latency_ms / 1e3 * SCALE
    # No prefill: the first token comes at admission, well before a prefill could finish.
    assert events[0].deadline - start == pytest.approx(admission, rel=0.05)
    assert (
        events[1].deadline - events[0].deadline
        < PROFILE.efficiency.prefill_overhead_ms / 1e3 * SCALE
    )


def test_zero_new_tokens_ends_the_stream_without_events() -> None:
    assert run(make(), lambda e: collect(e.generate(GenRequest("a", 10, 0)))) == []
    ready = GenRequest("a", 10, 0, kv_ready=True)
    assert run(make("decode"), lambda e: collect(e.generate(ready))) == []


def test_same_seed_gives_the_same_schedule() -> None:
    async def gaps(engine: Engine) -> list[float]:
        events = [e for e, _ in await collect(engine.generate(GenRequest("a", 100, 20)))]
        return [round(b.deadline - a.deadline, 9) for a, b in itertools.pairwise(events)]

    assert run(make(seed=7), gaps) == run(make(seed=7), gaps)
    assert run(make(seed=7), gaps) != run(make(seed=8), gaps)


def test_bad_requests_raise_value_error_with_a_message() -> None:
    async def body(engine: Engine) -> None:
        with pytest.raises(ValueError, match="max_new_tokens"):
            engine.generate(GenRequest("a", 10, -1))
        with pytest.raises(ValueError, match="empty"):
            engine.generate(GenRequest("a", 0, 10))
        with pytest.raises(ValueError, match="max_total_tokens"):
            engine.generate(GenRequest("a", 90, 20))
        with pytest.raises(ValueError, match="context length"):
            engine.generate(GenRequest("a", 30000, 5000))

    run(make(max_total_tokens=100), body)


def test_bad_engine_settings_are_config_errors_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--mem-fraction-static"):
        make(mem_fraction_static=0.01)
    with pytest.raises(ConfigError, match="--max-running-requests"):
        make(max_running_requests=0)


def test_stop_ends_pending_streams_with_an_error() -> None:
    async def main() -> None:
        engine = make()
        await engine.start()
        stream = engine.generate(GenRequest("a", 10, 100_000 // 4))
        first = await stream.__anext__()
        assert first.index == 0
        await engine.stop()
        with pytest.raises(EngineStopped):
            async for _ in stream:
                pass

    asyncio.run(main())


def test_closing_a_stream_frees_its_kv_and_counters_add_up() -> None:
    async def body(engine: Engine) -> None:
        stream = engine.generate(GenRequest("a", 10, 10_000))
        await stream.__anext__()
        assert engine.stats().running == 1 and engine.stats().kv_tokens_used >= 10
        await stream.aclose()
        while engine.stats().running:
            await asyncio.sleep(0)
        await collect(engine.generate(GenRequest("b", 7, 3)))
        stats = engine.stats()
        assert stats.kv_tokens_used == 0 and stats.queued == 0
        assert stats.prompt_tokens_total == 17
        assert stats.requests_total == 1  # the aborted one does not count as served
        assert stats.last_gen_throughput > 0

    run(make(), body)


def test_max_total_tokens_defaults_to_the_memory_model() -> None:
    assert make().max_total_tokens > 2_000_000
    assert make(mem_fraction_static=0.45).max_total_tokens < 1_100_000
    assert make(max_total_tokens=5000).max_total_tokens == 5000


def test_a_reader_that_falls_behind_sees_a_backlog_of_due_tokens_and_loses_none() -> None:
    async def body(engine: Engine) -> tuple[int, list[int]]:
        stream = engine.generate(GenRequest("a", 8, 6))
        first = await stream.__anext__()
        while engine.stats().generation_tokens_total < 4:  # the engine runs ahead of us
            await asyncio.sleep(0)
        backlog = stream.backlog()
        rest = [event.index async for event in stream]
        return backlog, [first.index, *rest]

    backlog, indexes = run(make(), body)
    assert backlog >= 3
    assert indexes == list(range(6))
