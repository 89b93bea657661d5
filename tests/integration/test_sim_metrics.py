"""The simulator's ``/metrics`` against the spec the harness reads (SGLang 0.5.23's page).

A prefill and a decode simulator get each request at the same time, with its bootstrap fields,
as a PD router sends it (plain HTTP on loopback, no router needed for what is checked here):
every name the harness reads is on the roles that export it, with SGLang's label sets, and the
two sides' stages add up the same way; the prefill's prefix cache hits a shared prompt and
``/flush_cache`` brings the miss back.
"""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sglbench.record.metrics import COUNTERS, GAUGES, HISTOGRAMS
from tests.conftest import Proc, Procs, free_port

pytestmark = pytest.mark.integration

SCHEDULER_LABELS = {"engine_type", "model_name", "moe_ep_rank", "pp_rank", "tp_rank"}
PREFIX = list(range(100, 612))  # 512 shared prompt tokens
Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class Pair:
    prefill: Proc
    decode: Proc
    bootstrap_port: int


@pytest.fixture(scope="module")
def pair(module_procs: Procs) -> Pair:
    bootstrap = free_port()
    prefill = module_procs.sim("--disaggregation-mode", "prefill", "--enable-metrics",
                               "--disaggregation-bootstrap-port", str(bootstrap),
                               name="prefill", wait=False)  # fmt: skip
    decode = module_procs.sim("--disaggregation-mode", "decode", "--enable-metrics",
                              name="decode", wait=False)  # fmt: skip
    prefill.wait_ready()
    decode.wait_ready()
    return Pair(prefill, decode, bootstrap)


def scrape(proc: Proc) -> Samples:
    """Every sample of the page, parsed as the harness parses it."""
    req = urllib.request.Request(proc.url + "/metrics", headers={"Accept": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name].append((dict(s.labels), s.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


def generate_pd(pair: Pair, room: int, ids: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request sent to both sides at once, as a PD router does; (prefill, decode) answers."""
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 4},
            "bootstrap_host": "127.0.0.1", "bootstrap_port": pair.bootstrap_port,
            "bootstrap_room": room}  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        sides = [pool.submit(post, p.url + "/generate", body) for p in (pair.prefill, pair.decode)]
        return sides[0].result(), sides[1].result()


def test_every_name_the_harness_reads_is_on_the_right_role_with_sglangs_labels(pair: Pair) -> None:
    generate_pd(pair, 1, [7] * 300)
    prefill, decode = scrape(pair.prefill), scrape(pair.decode)
    for name in HISTOGRAMS:
        on_prefill, on_decode = f"{name}_count" in prefill, f"{name}_count" in decode
        assert on_prefill == (name != "sglang:time_to_first_token_seconds"), name
        assert on_decode == (not name.startswith(("sglang:kv_transfer_latency",
                                                  "sglang:kv_transfer_total",
                                                  "sglang:kv_transfer_speed"))), name  # fmt: skip
    for name in [*COUNTERS, *GAUGES]:
        if name not in ("sglang:num_bootstrap_failed_reqs_total",  # absent until a failure
                        "sglang:num_transfer_failed_reqs_total", "sglang:cached_tokens_total",
                        "sglang:num_aborted_requests_total"):  # fmt: skip
            assert name in prefill, name
        if name != "sglang:prefill_effective_tokens_total" and not name.startswith(
            ("sglang:num_bootstrap", "sglang:num_transfer", "sglang:cached", "sglang:num_abort")
        ):
            assert name in decode, name
    (queue, _), *_ = prefill["sglang:queue_time_seconds_count"]
    assert set(queue) == SCHEDULER_LABELS and queue["engine_type"] == "prefill"
    (ttft, _), *_ = decode["sglang:time_to_first_token_seconds_count"]
    assert set(ttft) == {"engine_type", "model_name", "is_streaming"}
    assert ttft["engine_type"] == "decode" and ttft["is_streaming"] == "false"
    modes = {lab["mode"] for lab, _ in prefill["sglang:prefill_effective_tokens_total"]}
    assert modes == {"input", "device_hit", "host_hit", "storage_hit"}
    assert total(prefill, "sglang:kv_transfer_total_mb_count") >= 1


def flush(proc: Proc, query: str = "") -> bytes:
    """POST /flush_cache as the harness does; the body of a 200 (an error status raises)."""
    req = urllib.request.Request(proc.url + "/flush_cache" + query, method="POST")
    with urllib.request.urlopen(req, timeout=70) as resp:
        body: bytes = resp.read()
    return body


def stage_means(samples: Samples) -> dict[str, float]:
    name = "sglang:per_stage_req_latency_seconds"
    sums, counts = defaultdict(float), defaultdict(float)
    for lab, v in samples[f"{name}_sum"]:
        sums[lab["stage"]] += v
    for lab, v in samples[f"{name}_count"]:
        counts[lab["stage"]] += v
    return {k: sums[k] / counts[k] for k in sums if counts[k]}


def test_both_sides_stages_add_up_and_the_prefix_cache_hits_until_a_flush(pair: Pair) -> None:
    assert flush(pair.prefill, "?timeout=60").startswith(b"Cache flushed.")  # SGLang's text
    before = scrape(pair.prefill)
    answers = [generate_pd(pair, 10 + i, PREFIX + [900 + i] * 16) for i in range(3)]
    cached = [(p["meta_info"]["cached_tokens"], d["meta_info"]["cached_tokens"])
              for p, d in answers]  # fmt: skip
    assert cached == [(0, 0), (512, 512), (512, 512)]  # decode reports the prefill's hit
    after = scrape(pair.prefill)
    hits = (total(after, "sglang:prefill_effective_tokens_total", mode="device_hit")
            - total(before, "sglang:prefill_effective_tokens_total", mode="device_hit"))
    computed = (total(after, "sglang:prefill_effective_tokens_total", mode="input")
                - total(before, "sglang:prefill_effective_tokens_total", mode="input"))
    assert (hits, computed) == (1024, 528 + 2 * 16)
    assert flush(pair.prefill).startswith(b"Cache flushed.")  # idle: flushed at once
    prefill, decode = generate_pd(pair, 20, PREFIX + [999] * 16)
    assert prefill["meta_info"]["cached_tokens"] == decode["meta_info"]["cached_tokens"] == 0

    p, d = stage_means(scrape(pair.prefill)), stage_means(scrape(pair.decode))
    queue = scrape(pair.prefill)
    prefill_side = (p["prefill_bootstrap"] + p["prefill_forward"] + p["prefill_transfer_kv_cache"]
                    + total(queue, "sglang:queue_time_seconds_sum")
                    / total(queue, "sglang:queue_time_seconds_count"))  # fmt: skip
    decode_side = d["decode_bootstrap"] + d["decode_transferred"]
    print(f"prefill side {prefill_side * 1e3:.1f} ms, decode waited {decode_side * 1e3:.1f} ms")
    assert decode_side == pytest.approx(prefill_side, rel=0.1, abs=0.005)
    assert {"decode_waiting", "fake_output"} <= set(d)
    waited = scrape(pair.decode)  # decode's queue time is its decode_waiting stage
    assert total(waited, "sglang:queue_time_seconds_sum") / total(
        waited, "sglang:queue_time_seconds_count") == pytest.approx(d["decode_waiting"], rel=1e-6)
