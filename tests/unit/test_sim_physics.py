"""The physics that matters at high load: CUDA-graph limit, scheduler CPU, KV retraction, one GPU
shared by two servers, a KV link shared by transfers, and the bench client's draws."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from sglbench.errors import ConfigError
from sglbench.sim import timing
from sglbench.sim.engine import Engine, EngineConfig, GenRequest
from sglbench.sim.profiles import load_profile
from sglbench.sim.replay import replay
from sglbench.sim.resources import KvLink, SharedGpu
from sglbench.sim.topology import build, splits
from sglbench.sim.vclock import run_virtual
from sglbench.sim.workload import Workload, draw, matching_draw

GH200 = load_profile("gh200-qwen2.5-3b")
A100 = load_profile("a100-qwen2.5-3b")


def test_cuda_graph_limit_follows_sglang_defaults_and_eager_decode_costs_more() -> None:
    assert timing.cuda_graph_max_bs(GH200, 1) == 256  # 95 GiB: SGLang's 90-160 GiB bucket
    assert timing.cuda_graph_max_bs(A100, 1) == 256 and timing.cuda_graph_max_bs(A100, 4) == 512
    inside = timing.decode_pass(GH200, 1, 256, 256 * 500)
    above = timing.decode_pass(GH200, 1, 257, 257 * 500)
    assert inside.host == 0.0
    assert above.host == pytest.approx(GH200.efficiency.eager_overhead_ms / 1e3)
    assert above.alone > inside.alone + 0.9 * above.host


def test_scheduler_cpu_is_hidden_at_small_batches_and_caps_large_ones() -> None:
    cpu_bound = replace(GH200, efficiency=replace(GH200.efficiency, sched_per_req_us=60.0))
    small = timing.decode_pass(cpu_bound, 1, 8, 8 * 200)
    large = timing.decode_pass(cpu_bound, 1, 512, 512 * 200)
    assert small.alone == pytest.approx(small.gpu)  # overlapped: the GPU pass is longer
    assert large.alone == pytest.approx(large.cpu) and large.cpu > large.gpu


def _indexes(engine: Engine, requests: list[GenRequest]) -> list[list[int]]:
    """Every request's token indexes, served by ``engine`` on the virtual clock."""

    async def body() -> list[list[int]]:
        await engine.start()
        try:
            streams = [engine.generate(r) for r in requests]
            events = await asyncio.gather(*(s.collect() for s in streams))
            return [[e.index for e in evs] for evs in events]
        finally:
            await engine.stop()

    return run_virtual(body())


def test_kv_exhaustion_retracts_requests_that_then_finish_with_every_token() -> None:
    # Without ignore_eos, admission counts only new_token_ratio (0.7) of a running request's
    # output: five requests of 10 + 90 tokens get into 400 KV tokens and outgrow them.
    engine = Engine(EngineConfig(role="null", profile=GH200, max_total_tokens=400))
    reqs = [GenRequest(f"r{i}", 10, 90, ignore_eos=False) for i in range(8)]
    indexes = _indexes(engine, reqs)
    assert engine.retracted_total > 0
    assert indexes == [list(range(90))] * 8  # recomputed, not lost nor repeated


def test_ignore_eos_requests_reserve_their_whole_output_and_are_never_retracted() -> None:
    cfg = EngineConfig(role="null", profile=GH200, max_total_tokens=400)
    engine = Engine(cfg)
    reqs = [GenRequest(f"r{i}", 10, 90) for i in range(8)]
    assert _indexes(engine, reqs) == [list(range(90))] * 8
    assert engine.retracted_total == 0


def test_two_servers_on_one_gpu_slow_each_other_down() -> None:
    """pd_intra: a decode step overlapping a prefill pass of the other server takes longer."""

    async def decode_gaps(shared: bool) -> float:
        gpu = SharedGpu() if shared else None
        dec = Engine(EngineConfig(role="decode", profile=GH200, gpu=gpu, mem_fraction_static=0.45))
        pre = Engine(EngineConfig(role="prefill", profile=GH200, gpu=gpu, mem_fraction_static=0.45))
        await dec.start()
        await pre.start()
        stream = dec.generate(GenRequest("d", 100, 200, kv_ready=True))
        loads = [pre.generate(GenRequest(f"p{i}", 4000, 1)).collect() for i in range(8)]
        events, *_ = await asyncio.gather(stream.collect(), *loads)
        await dec.stop()
        await pre.stop()
        return events[-1].deadline - events[0].deadline

    alone, shared = run_virtual(decode_gaps(False)), run_virtual(decode_gaps(True))
    assert shared > 1.2 * alone


def test_kv_transfers_posted_together_arrive_together_and_a_lone_one_is_fast() -> None:
    async def body() -> tuple[list[float], float]:
        link = KvLink(bandwidth_GBps=1.0, latency_ms=0.0)
        burst = await asyncio.gather(*(link.send(n * 1e6, 0.0) for n in (1, 10, 100)))
        lone = await KvLink(1.0, 0.0).send(1e6, 0.0)
        return list(burst), lone

    burst, lone = run_virtual(body())
    assert burst == pytest.approx([0.111] * 3)  # 111 MB over 1 GB/s, all done at once
    assert lone == pytest.approx(0.001)


def test_draws_match_the_reference_clients_token_totals() -> None:
    # agg_n100_in128_out128_c32 measured 6145 input and 6180 output tokens (seed 1).
    w = matching_draw(Workload(100, 128, 128, max_concurrency=32), 6145, 6180)
    lengths, offsets = draw(w)
    assert w.outputs_from_zero  # the 0.5.5 client drew outputs from [0, L]
    assert sum(i for i, _ in lengths) == 6145 and sum(o for _, o in lengths) == 6180
    assert offsets == [0.0] * 100
    _, poisson = draw(Workload(200, 128, 128, request_rate=50.0))
    assert poisson[-1] / 199 == pytest.approx(1 / 50, rel=0.2)


def test_replay_gives_a_bench_client_row_in_well_under_a_second_per_point() -> None:
    row = replay(build("aggx2", GH200), Workload(64, 256, 64, max_concurrency=16))
    assert row["completed"] == 64 and row["simulated"] is True and row["gpus"] == 2
    for key in ("output_throughput", "mean_ttft_ms", "p99_itl_ms", "mean_e2e_latency_ms"):
        assert row[key] > 0
    assert row["duration"] > 0.3  # seconds of modelled time, simulated in milliseconds


def test_topologies_of_a_budget_and_their_gpu_counts() -> None:
    assert splits(4) == ["aggx4", "1p3d", "2p2d", "3p1d"]
    assert splits(4, tp=2) == ["aggx2", "1p1d"]
    assert build("pd_intra", GH200).gpus == 1
    assert build("2p2d", GH200, tp=2).gpus == 8
    with pytest.raises(ValueError, match="unknown topology"):
        build("4x", GH200)


def test_a_profile_loads_from_a_path_and_a_bad_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    raw = GH200.to_dict() | {"name": "mine", "provenance": {"tool": "test"}}
    path.write_text(json.dumps(raw))
    assert load_profile(str(path)).provenance == {"tool": "test"}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not JSON") as err:
        load_profile(str(tmp_path / "bad.json"))
    assert "\n" not in str(err.value)


def test_a_router_that_forwards_every_token_caps_the_streams_it_carries() -> None:
    """200 us per token (a slow Python proxy): 5k tokens/s at most, however fast the decode."""
    slow = replace(A100, efficiency=replace(A100.efficiency, router_us_per_token=200.0))
    w = Workload(64, 128, 256, range_ratio=1.0, max_concurrency=64)
    fast_row = replay(build("1p2d", GH200, A100), w)
    capped = replay(build("1p2d", GH200, slow), w)
    assert fast_row["mean_itl_ms"] < 10.0  # 64 streams over two A100s
    assert capped["mean_itl_ms"] == pytest.approx(64 * 0.2, rel=0.1)  # 64 tokens x 200 us
