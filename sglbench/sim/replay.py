"""Run a sweep point through the engines on a virtual clock: no HTTP, no client, no sleeping.

:func:`replay` builds the topology's engines on one :class:`~sglbench.sim.vclock.VirtualClockLoop`
(servers of one GPU group share a :class:`~sglbench.sim.resources.SharedGpu`; PD transfers go
over :class:`~sglbench.sim.resources.KvLink` s), and drives them as SGLang's bench client
would: the same length draws and send times (:mod:`sglbench.sim.workload`), at most
``max_concurrency`` requests in flight, round robin over the servers of each role (the router's
``round_robin`` policy). A PD request is prefilled, its KV is sent when the prefill ends, and
the decode server takes it once the KV has arrived, as in the live simulator. Token times are
the engine's deadlines. It returns the bench client's row (:func:`summarize`, the same keys and
formulas as ``sglang.benchmark.serving.calculate_metrics``), marked ``simulated``.

Not modelled here: the client's and the router's own CPU time and streaming (a real run adds a
few ms of TTFT per request at c32, more through the Python mini-lb), and the bench client's
warm-up request.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sglbench.sim.engine import Engine, EngineConfig, GenRequest
from sglbench.sim.resources import KvLink, SharedGpu, StreamPath
from sglbench.sim.sequence import sleep_until
from sglbench.sim.topology import ServerSpec, Topology
from sglbench.sim.vclock import run_virtual
from sglbench.sim.workload import Workload, draw


@dataclass
class RequestRecord:
    """What the bench client measures of one request (seconds)."""

    prompt_len: int
    output_len: int
    start: float
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)


class Deployment:
    """The engines of one topology on the running loop, and the router between them."""

    def __init__(self, topo: Topology, seed: int = 0) -> None:
        """Build (not start) every server of ``topo``; engine seeds derive from ``seed``."""
        self.topo = topo
        self._gpus: dict[str, SharedGpu] = {}
        self._router = self._make_router(topo)
        seeds = itertools.count(seed * 1000)
        self.agg = [self._engine(s, "null", next(seeds)) for s in topo.agg]
        self.prefill = [self._engine(s, "prefill", next(seeds)) for s in topo.prefill]
        self.decode = [self._engine(s, "decode", next(seeds)) for s in topo.decode]
        self._links = self._make_links()
        self._rr = itertools.count()

    @staticmethod
    def _make_router(topo: Topology) -> StreamPath | None:
        """The PD router's stream path (agg replicas: the regular-mode router is not modelled)."""
        if not topo.decode:
            return None
        cost = topo.decode[0].profile.efficiency.router_us_per_token
        return StreamPath(cost) if cost > 0 else None

    def _engine(self, spec: ServerSpec, role: str, seed: int) -> Engine:
        gpu = None
        if spec.gpu_group is not None:
            gpu = self._gpus.setdefault(spec.gpu_group, SharedGpu())
        return Engine(
            EngineConfig(
                role=role,  # type: ignore[arg-type]
                profile=spec.profile,
                tp_size=spec.tp,
                mem_fraction_static=spec.mem_fraction,
                max_running_requests=spec.max_running_requests,
                chunked_prefill_size=spec.chunked_prefill_size,
                enable_mixed_chunk=spec.enable_mixed_chunk,
                seed=seed,
                gpu=gpu,
                router=self._router if role == "decode" else None,
            )
        )

    def _make_links(self) -> list[KvLink]:
        if not self.prefill:
            return []
        p, d = self.topo.prefill[0].profile, self.topo.decode[0].profile
        bandwidth = self.topo.link_GBps or min(p.gpu.link_bandwidth_GBps, d.gpu.link_bandwidth_GBps)
        latency = max(p.efficiency.kv_transfer_latency_ms, d.efficiency.kv_transfer_latency_ms)
        count = 1 if self.topo.shared_link else len(self.prefill)
        return [KvLink(bandwidth, latency) for _ in range(count)]

    @property
    def engines(self) -> list[Engine]:
        """Every engine of the deployment."""
        return [*self.agg, *self.prefill, *self.decode]

    async def start(self) -> None:
        """Start every engine."""
        for engine in self.engines:
            await engine.start()

    async def stop(self) -> None:
        """Stop every engine."""
        for engine in self.engines:
            await engine.stop()

    async def request(self, rid: str, prompt: int, out: int) -> RequestRecord:
        """Serve one request as the bench client sees it (times from now)."""
        loop = asyncio.get_running_loop()
        rec = RequestRecord(prompt, out, start=loop.time())
        i = next(self._rr)
        if self.agg:
            stream = self.agg[i % len(self.agg)].generate(GenRequest(rid, prompt, out))
        else:
            p = i % len(self.prefill)
            prefill = self.prefill[p]
            done = rec.start
            for event in await prefill.generate(GenRequest(rid, prompt, out)).collect():
                done = event.deadline
            if out == 0:
                rec.ttft = rec.latency = done - rec.start
                return rec
            arrived = await prefill.send_kv(prompt, done, self._links[p % len(self._links)])
            await sleep_until(arrived)
            decode = self.decode[i % len(self.decode)]
            stream = decode.generate(GenRequest(rid, prompt, out, kv_ready=True))
        last = rec.start
        for event in await stream.collect():
            if event.index == 0:
                rec.ttft = event.deadline - rec.start
            else:
                rec.itl.append(event.deadline - last)
            last = event.deadline
        rec.latency = (last if out > 0 else loop.time()) - rec.start
        if out == 0:
            rec.ttft = rec.latency
        return rec


async def _drive(dep: Deployment, w: Workload) -> tuple[list[RequestRecord], float]:
    lengths, offsets = draw(w)
    loop = asyncio.get_running_loop()
    limit = w.max_concurrency or len(lengths)
    sem = asyncio.Semaphore(limit)
    await dep.start()
    t0 = loop.time()

    async def one(i: int, prompt: int, out: int) -> RequestRecord:
        await sleep_until(t0 + offsets[i])
        async with sem:
            return await dep.request(f"r{i}", prompt, out)

    try:
        records = await asyncio.gather(*(one(i, p, o) for i, (p, o) in enumerate(lengths)))
        return list(records), loop.time() - t0
    finally:
        await dep.stop()


def run_point(topo: Topology, w: Workload, seed: int = 0) -> tuple[list[RequestRecord], float]:
    """Every request's record and the benchmark duration of one point, on virtual time."""
    return run_virtual(_drive(Deployment(topo, seed), w))


def replay(topo: Topology, w: Workload, seed: int = 0, tag: str = "") -> dict[str, Any]:
    """The bench client's row for one point, simulated on virtual time (seconds of CPU)."""
    records, duration = run_point(topo, w, seed)
    return summarize(records, duration, w, topo, tag)


def _stats(name: str, values: list[float], out: dict[str, Any]) -> None:
    data = np.asarray(values or [0.0]) * 1000.0
    out[f"mean_{name}_ms"] = float(np.mean(data))
    out[f"median_{name}_ms"] = float(np.median(data))
    out[f"std_{name}_ms"] = float(np.std(data))
    for p in (90, 95, 99):
        out[f"p{p}_{name}_ms"] = float(np.percentile(data, p))


def summarize(
    records: list[RequestRecord], duration: float, w: Workload, topo: Topology, tag: str = ""
) -> dict[str, Any]:
    """The bench client's JSONL row (its keys and formulas) for simulated ``records``."""
    total_in = sum(r.prompt_len for r in records)
    total_out = sum(r.output_len for r in records)
    tpots = [(r.latency - r.ttft) / (r.output_len - 1) for r in records if r.output_len > 1]
    row: dict[str, Any] = {
        "tag": tag or topo.name,
        "backend": "sglang",
        "dataset_name": w.dataset,
        "request_rate": w.request_rate,
        "max_concurrency": w.max_concurrency,
        "random_input_len": w.input_len,
        "random_output_len": w.output_len,
        "random_range_ratio": w.range_ratio,
        "duration": duration,
        "completed": len(records),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(records) / duration,
        "input_throughput": total_in / duration,
        "output_throughput": total_out / duration,
        "total_throughput": (total_in + total_out) / duration,
    }
    _stats("ttft", [r.ttft for r in records], row)
    _stats("tpot", tpots, row)
    _stats("itl", [x for r in records for x in r.itl], row)
    _stats("e2e_latency", [r.latency for r in records], row)
    row["concurrency"] = sum(r.latency for r in records) / duration
    row["simulated"] = True
    row["topology"] = topo.name
    row["gpus"] = topo.gpus
    return row


def attainment(records: list[RequestRecord], ttft_ms: float | None, tpot_ms: float | None) -> float:
    """Share of requests meeting every given SLO (``sglang.benchmark.goodput``'s rule)."""
    if not records:
        return 0.0
    good = 0
    for r in records:
        tpot = (r.latency - r.ttft) / (r.output_len - 1) if r.output_len > 1 else 0.0
        ok_ttft = ttft_ms is None or r.ttft * 1e3 <= ttft_ms
        ok_tpot = tpot_ms is None or tpot * 1e3 <= tpot_ms
        good += ok_ttft and ok_tpot
    return good / len(records)
