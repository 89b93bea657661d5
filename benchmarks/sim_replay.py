"""In-process replays of the simulator's engine on a virtual clock (used by sim_calibration.py).

* :class:`DirectReplay` drives the engine like SGLang's bench client would (c workers, given
  lengths): the timing model alone, with no HTTP, no client and no CPU of this machine in it.
* :func:`replay_arrivals` feeds the engine the requests a real HTTP run's server saw, at the
  times it saw them (from a ``--sim-trace`` file): if it reproduces that run's server-side
  numbers, the server delivered exactly what the model intended for those arrivals, and whatever
  differs from :class:`DirectReplay` comes from when the client sent its requests.
"""

from __future__ import annotations

import asyncio
import selectors
import statistics
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sglbench.sim import timing
from sglbench.sim.engine import Engine, EngineConfig, GenRequest
from sglbench.sim.profiles import Profile

_T = TypeVar("_T")


@dataclass
class _Record:
    start: float
    ttft: float = 0.0
    itls: list[float] | None = None
    tokens: int = 0


class DirectReplay:
    """In-process replay: engines on this loop, a client that awaits token streams."""

    def __init__(self, profile: Profile, mode: str) -> None:
        self.profile = profile
        self.mode = mode
        if mode == "agg":
            config = EngineConfig(role="null", profile=profile, mem_fraction_static=0.9)
            self.engines = [Engine(config)]
        else:
            self.engines = [
                Engine(EngineConfig(role=role, profile=profile, mem_fraction_static=0.45))
                for role in ("prefill", "decode")
            ]

    async def _request(self, rid: str, prompt: int, out: int) -> _Record:
        loop = asyncio.get_running_loop()
        rec = _Record(start=loop.time(), itls=[])
        if self.mode == "agg":
            stream = self.engines[0].generate(GenRequest(rid, prompt, out))
        else:
            async for _ in self.engines[0].generate(GenRequest(rid, prompt, out)):
                pass
            await asyncio.sleep(timing.kv_transfer_time(self.profile, prompt))
            stream = self.engines[1].generate(GenRequest(rid, prompt, out, kv_ready=True))
        last = rec.start
        async for _ in stream:
            now = loop.time()
            if rec.tokens == 0:
                rec.ttft = now - rec.start
            else:
                assert rec.itls is not None
                rec.itls.append(now - last)
            last = now
            rec.tokens += 1
        return rec

    async def run(self, lengths: list[tuple[int, int]], concurrency: int) -> dict[str, float]:
        """Replay with ``concurrency`` workers; return the client-side metrics."""
        for engine in self.engines:
            await engine.start()
        sem = asyncio.Semaphore(concurrency)

        async def limited(i: int, prompt: int, out: int) -> _Record:
            async with sem:
                return await self._request(f"r{i}", prompt, out)

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        records = await asyncio.gather(*(limited(i, p, o) for i, (p, o) in enumerate(lengths)))
        duration = loop.time() - t0
        for engine in self.engines:
            await engine.stop()
        itls = [x for r in records for x in (r.itls or [])]
        return {
            "output_throughput": sum(r.tokens for r in records) / duration,
            "mean_ttft_ms": 1e3 * statistics.fmean(r.ttft for r in records),
            "mean_itl_ms": 1e3 * statistics.fmean(itls) if itls else 0.0,
        }


class _VirtualClockSelector(selectors.DefaultSelector):
    """A selector that, instead of waiting, advances a virtual clock by the timeout."""

    clock = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.clock += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """Event loop on virtual time: sleeps cost nothing, so a replay measures the model alone.

    Only for in-process replays with no real I/O (the engines and the driver share the loop).
    """

    def __init__(self) -> None:
        self._virtual = _VirtualClockSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.clock


def run_virtual(coro: Coroutine[Any, Any, _T], virtual: bool = True) -> _T:
    """Run ``coro`` on virtual time (sleeps cost nothing), or for real if not ``virtual``."""
    if not virtual:
        return asyncio.run(coro)
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def _replay_arrivals(records: list[dict[str, Any]], profile: Profile) -> dict[str, float]:
    engine = Engine(EngineConfig(role="null", profile=profile, mem_fraction_static=0.9))
    await engine.start()
    loop = asyncio.get_running_loop()
    t0, a0 = loop.time(), records[0]["arrival"]
    ttfts: list[float] = []
    itls: list[float] = []

    async def one(r: dict[str, Any]) -> int:
        await asyncio.sleep(r["arrival"] - a0 - (loop.time() - t0))
        last = start = loop.time()
        req = GenRequest(r["rid"], r["prompt_tokens"], r["max_new_tokens"])
        async for event in engine.generate(req):
            now = loop.time()
            (itls if event.index else ttfts).append(now - (last if event.index else start))
            last = now
        return int(r["max_new_tokens"])

    tokens = sum(await asyncio.gather(*(one(r) for r in records)))
    duration = loop.time() - t0
    await engine.stop()
    return {
        "output_throughput": tokens / duration,
        "mean_ttft_ms": 1e3 * statistics.fmean(ttfts),
        "mean_itl_ms": 1e3 * statistics.fmean(itls) if itls else 0.0,
    }


def replay_arrivals(records: list[dict[str, Any]], profile: Profile) -> dict[str, float]:
    """Replay an aggregated server's trace records (arrival, lengths) on virtual time.

    Returns the engine-side output throughput, mean TTFT and mean ITL for those arrivals.
    """
    ordered = sorted(records, key=lambda r: float(r["arrival"]))
    return run_virtual(_replay_arrivals(ordered, profile))
