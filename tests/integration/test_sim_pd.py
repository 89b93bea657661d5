"""Prefill + decode simulators behind SGLang's real PD routers, measured by the real bench client.

The decode simulator really waits (over HTTP, on the prefill's bootstrap port) until the prefill
simulator reports the KV as transferred, so the TTFT the client sees includes prefill and
transfer whatever the router does: the Rust router waits for the prefill response, MiniLB
streams the decode response at once.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Proc, Procs, free_port, read_trace, run_bench_client

pytestmark = pytest.mark.integration

NUM_PROMPTS, INPUT_LEN, OUTPUT_LEN, CONCURRENCY = 16, 512, 16, 4


@dataclass
class PdPair:
    prefill: Proc
    decode: Proc
    bootstrap_port: int
    prefill_trace: Path
    decode_trace: Path


@pytest.fixture(scope="module")
def pd(module_procs: Procs) -> PdPair:
    traces = module_procs.tmp
    bootstrap = free_port()
    prefill = module_procs.sim(
        "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port", str(bootstrap),
        "--sim-trace", str(traces / "prefill.jsonl"), name="prefill", wait=False,
    )  # fmt: skip
    decode = module_procs.sim(
        "--disaggregation-mode", "decode", "--sim-trace", str(traces / "decode.jsonl"),
        name="decode", wait=False,
    )  # fmt: skip
    prefill.wait_ready()
    decode.wait_ready()
    return PdPair(prefill, decode, bootstrap, traces / "prefill.jsonl", traces / "decode.jsonl")


def start_router(procs: Procs, pd: PdPair, mini_lb: bool) -> Proc:
    """``python -m sglang_router.launch_router --pd-disaggregation`` on free loopback ports."""
    port = free_port()
    argv = [sys.executable, "-m", "sglang_router.launch_router", "--pd-disaggregation",
            "--prefill", pd.prefill.url, str(pd.bootstrap_port), "--decode", pd.decode.url,
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if mini_lb:
        argv.append("--mini-lb")
    else:  # the Rust router binds Prometheus on 0.0.0.0:29000 unless told otherwise
        argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    router = procs.spawn("mini-lb" if mini_lb else "router", argv, url=f"http://127.0.0.1:{port}")
    wait_until_routing(router)
    return router


def wait_until_routing(router: Proc, timeout: float = 90.0) -> None:
    """Poll one tiny generation through the router until it answers 200 (workers registered)."""
    body = json.dumps({"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 1}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if router.popen.poll() is not None:
            pytest.fail(f"router exited with {router.popen.returncode}:\n{router.log_text()}")
        req = urllib.request.Request(router.url + "/generate", data=body.encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # poll interval
    pytest.fail(f"router not routing within {timeout:.0f} s:\n{router.log_text()}")


def bench_through(router: Proc, tmp_path: Path, tokenizer_dir: Path) -> dict[str, Any]:
    return run_bench_client(
        router.url, tokenizer_dir, tmp_path / "bench.jsonl", "--backend", "sglang",
        "--num-prompts", str(NUM_PROMPTS), "--random-input-len", str(INPUT_LEN),
        "--random-output-len", str(OUTPUT_LEN), "--max-concurrency", str(CONCURRENCY),
        "--pd-separated",
    )  # fmt: skip


def check_pd_run(row: dict[str, Any], pd: PdPair) -> None:
    """All complete, and TTFT includes the modelled prefill + KV transfer."""
    assert row["completed"] == NUM_PROMPTS
    assert row["output_lens"] == [OUTPUT_LEN] * NUM_PROMPTS
    assert row["total_output_tokens_retokenized"] == NUM_PROMPTS * OUTPUT_LEN
    prefill = {r["bootstrap_room"]: r for r in read_trace(pd.prefill_trace)[-NUM_PROMPTS:]}
    decode = [r for r in read_trace(pd.decode_trace)[-NUM_PROMPTS:]]
    assert {r["bootstrap_room"] for r in decode} == set(prefill)
    for d in decode:  # the decode side never starts before the KV arrived
        assert d["deadlines"][0] >= prefill[d["bootstrap_room"]]["kv_at"]
    prefill_and_transfer = statistics.mean(r["kv_at"] - r["arrival"] for r in prefill.values())
    decode_only = statistics.mean(d["deadlines"][0] - d["kv_at"] for d in decode)
    print(  # shown with -s: the numbers behind the assertions
        f"PD: client mean TTFT {row['mean_ttft_ms']:.1f} ms; modelled prefill+transfer"
        f" {prefill_and_transfer * 1e3:.1f} ms; decode-only first token {decode_only * 1e3:.1f} ms"
    )
    assert prefill_and_transfer > 2 * decode_only  # so the comparison below means something
    assert row["mean_ttft_ms"] >= 0.95 * prefill_and_transfer * 1e3


def test_rust_router_pd_ttft_includes_prefill_and_transfer(
    pd: PdPair, procs: Procs, tmp_path: Path, tokenizer_dir: Path
) -> None:
    router = start_router(procs, pd, mini_lb=False)
    check_pd_run(bench_through(router, tmp_path, tokenizer_dir), pd)


def test_mini_lb_pd_ttft_includes_prefill_and_transfer(
    pd: PdPair, procs: Procs, tmp_path: Path, tokenizer_dir: Path
) -> None:
    router = start_router(procs, pd, mini_lb=True)
    check_pd_run(bench_through(router, tmp_path, tokenizer_dir), pd)
