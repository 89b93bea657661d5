"""Issue 11's workloads on the simulator with the real client and router, offline, end to end.

What runs today: shared prefix through PD (every worker flushed after the warm-up and the flush
recorded, every worker and the router scraped around the point), long-context points from a
small local file, trace replay with its timestamps, bursty arrivals, each with the client's
lateness recorded; and what the simulator's SGLang metrics show: prefix-cache hits (and misses
after each flush), a slowed KV link in the KV-transfer bar only, transfer failures as a count and
a finding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sglbench.execute import deploy
from sglbench.execute.bench import run_bench
from sglbench.execute.compare import compare
from sglbench.record.metrics import PointMetrics, read_points
from sglbench.report.breakdown import ttft_breakdown
from sglbench.report.build import build_report
from sglbench.results.checks import sanity_checks
from sglbench.results.load import load_results
from sglbench.settings import Settings
from tests.conftest import REPO
from tests.integration.test_bench import loopback_settings, recording_console, rows

pytestmark = pytest.mark.integration

SHARED_PREFIX = {"BENCH_DATASET": "generated-shared-prefix", "BENCH_NUM_PROMPTS": "8",
                 "BENCH_GSP_NUM_GROUPS": "2", "BENCH_GSP_SYSTEM_PROMPT_LEN": "256",
                 "BENCH_GSP_QUESTION_LEN": "16", "BENCH_GSP_OUTPUT_LEN": "8",
                 "BENCH_MAX_CONCURRENCY": "4"}  # fmt: skip


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub; servers started by the deploy code import this checkout."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def run(settings: Settings, mode: str) -> tuple[Path, dict[str, Any]]:
    """One compare run of ``mode``; its directory and metadata."""
    run_dir = compare(settings, modes=[mode], console=recording_console()[0])
    return run_dir, json.loads((run_dir / "metadata.json").read_text())


def only_point(run_dir: Path) -> PointMetrics:
    (line,) = read_points(run_dir / "metrics.jsonl").values()
    return line


def delta(point: PointMetrics, endpoint: str, sample: str) -> float:
    (found,) = [e for e in point.endpoints if e.name == endpoint]
    assert found.error is None, found.error
    return sum(s.delta for s in found.deltas if s.name == sample)


def test_pd_shared_prefix_flushes_every_worker_after_warmup_and_scrapes_them(
    tmp_path: Path,
) -> None:
    settings = loopback_settings(tmp_path, **SHARED_PREFIX, ROUTER_IMPL="smg")
    run_dir, meta = run(settings, "pd")

    (row,) = rows(run_dir / "pd.jsonl")
    assert row["completed"] == 8  # 2 groups x 4 prompts: the client ignores --num-prompts
    (point,) = meta["points"]
    flush = point["observed"]["cache_flush"]
    assert flush["done"] is True and flush["when"] == "after warm-up"
    assert [(w["name"], w["status"]) for w in flush["workers"]] == [("sglang-prefill", 200),
                                                                   ("sglang-decode", 200)]
    assert meta["workload"]["gsp_prompts_per_group"] == 4
    scraped = only_point(run_dir)
    assert [e.name for e in scraped.endpoints] == ["sglang-prefill", "sglang-decode", "router"]
    assert not scraped.warmup_included
    # The scrapes bracket the 8 measured requests, not the warm-up before them.
    assert delta(scraped, "sglang-prefill", "sglang:num_requests_total") == 8
    assert delta(scraped, "sglang-decode", "sglang:num_requests_total") == 8
    assert delta(scraped, "router", "smg_router_requests_total") == 8
    assert point["observed"]["lateness"]["arrivals"] == "all at once"


def write_conversations(path: Path, count: int) -> Path:
    """A small ShareGPT-style file: ``count`` two-turn conversations."""
    data = [{"conversations": [{"from": "human", "value": f"Question {i}: what is KV cache "
                                "transfer between prefill and decode workers?"},
                               {"from": "gpt", "value": "It moves the attention keys."}]}
            for i in range(count)]  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def test_long_context_points_run_offline_from_a_small_file(tmp_path: Path) -> None:
    source = write_conversations(tmp_path / "conversations.json", 4)
    settings = loopback_settings(tmp_path, BENCH_DATASET="random",
                                 BENCH_DATASET_PATH=str(source), BENCH_NUM_PROMPTS="4",
                                 BENCH_INPUT_LEN="8192", BENCH_OUTPUT_LEN="4",
                                 BENCH_MAX_CONCURRENCY="4")  # fmt: skip
    run_dir, meta = run(settings, "agg")

    (row,) = rows(run_dir / "agg.jsonl")
    assert row["completed"] == 4
    # Prompts repeated from the file up to 8192 tokens (text re-encodes within a few tokens).
    assert row["total_input_tokens"] == pytest.approx(4 * 8192, rel=0.02)
    assert meta["points"][0]["observed"]["cache_flush"]["done"] is True


def test_trace_replay_runs_offline_with_its_timestamps(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    records = [{"timestamp": t, "input_length": 999, "output_length": 4, "hash_ids": ids}
               for t, ids in ((0, [1]), (400, [1, 2]), (800, [3]), (1200, [1, 2, 3]))]
    trace.write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = loopback_settings(tmp_path, BENCH_DATASET="mooncake",
                                 BENCH_DATASET_PATH=str(trace), BENCH_NUM_PROMPTS="4",
                                 BENCH_MAX_CONCURRENCY="4")  # fmt: skip
    run_dir, meta = run(settings, "agg")

    (row,) = rows(run_dir / "agg.jsonl")
    assert row["completed"] == 4 and row["request_rate"] == "trace"
    late = meta["points"][0]["observed"]["lateness"]
    assert late["arrivals"] == "trace" and late["requests"] == 4
    assert late["scheduled_s"] == pytest.approx(1.2, abs=0.01)  # the trace's own spacing
    assert late["sent_s"] == pytest.approx(1.2, abs=0.1)  # sent at those times, give or take


def test_bursty_arrivals_follow_our_gamma_schedule(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path, BENCH_DATASET="random-ids", BENCH_NUM_PROMPTS="24",
                                 BENCH_REQUEST_RATE="30", BENCH_BURSTINESS="0.2",
                                 BENCH_MAX_CONCURRENCY="8")  # fmt: skip
    run_dir, meta = run(settings, "agg")

    (row,) = rows(run_dir / "agg.jsonl")
    assert row["completed"] == 24 and row["request_rate"] == 30
    late = meta["points"][0]["observed"]["lateness"]
    assert late["arrivals"] == "gamma" and late["requests"] == 24
    assert meta["workload"]["burstiness"] == 0.2
    assert load_results([run_dir])["workload_variant"].tolist() == ["burstiness 0.2"]


def test_shared_prefix_hits_on_agg_and_each_flush_brings_misses_back(tmp_path: Path) -> None:
    # Per group the first prompt computes its system prompt, the other 3 hit it: about 70% of
    # prompt tokens. Without the flush, point 2 would find every system prompt cached (~94%).
    settings = loopback_settings(tmp_path, **{**SHARED_PREFIX, "BENCH_MAX_CONCURRENCY": "1,2"})
    run_dir, _ = run(settings, "agg")

    df = load_results([run_dir])
    print(f"prefix hit rate per point: {df['prefix_hit_rate'].tolist()}")  # shown with -s
    assert df["prefix_hit_rate"].between(0.55, 0.85).all(), df["prefix_hit_rate"].tolist()
    report = build_report([run_dir], tmp_path / "report", None, None)
    assert "ttft_breakdown.png" in {p.name for p in report.images}
    for line in read_points(run_dir / "metrics.jsonl").values():
        assert all(v is not None for _, v in ttft_breakdown(line, 100.0).segments)


def pd_transfer_ms(tmp_path: Path, sim_args: str) -> tuple[float, float, float]:
    """(KV transfer, prefill compute, queue) means of one PD point, ms."""
    settings = loopback_settings(tmp_path, ROUTER_IMPL="smg", BENCH_MAX_CONCURRENCY="4",
                                 SIM_ARGS=sim_args, RESULTS_DIR=str(tmp_path / sim_args[:8]))
    run_dir, _ = run(settings, "pd")
    segments = dict(ttft_breakdown(only_point(run_dir), None).segments)
    return (segments["KV transfer"] or 0.0, segments["prefill compute"] or 0.0,
            segments["queue on prefill"] or 0.0)  # fmt: skip


def test_a_slowed_link_shows_in_the_kv_transfer_bar_only(tmp_path: Path) -> None:
    slowed = pd_transfer_ms(tmp_path, "--sim-kv-transfer-delay-ms 200")
    base = pd_transfer_ms(tmp_path, "--sim-seed 1")
    print(f"(KV transfer, prefill compute, queue) ms: slowed {slowed}, base {base}")  # with -s
    assert slowed[0] - base[0] == pytest.approx(200.0, rel=0.1)
    assert abs(slowed[1] - base[1]) < 20.0 and abs(slowed[2] - base[2]) < 20.0


def test_a_transfer_failure_is_counted_and_a_finding(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path, ROUTER_IMPL="smg", BENCH_MAX_CONCURRENCY="4",
                                 SIM_ARGS="--sim-kv-transfer-fail-rate 0.5")
    run_dir, _ = run(settings, "pd")
    df = load_results([run_dir])
    print(f"KV transfer failures: {df['kv_transfer_failed'].tolist()}")  # shown with -s
    assert float(df["kv_transfer_failed"].iloc[0]) > 0
    assert "kv_failures" in {f.check for f in sanity_checks(df)}


def test_rust_client_flushes_before_it_starts_and_says_the_warmup_is_counted(
    tmp_path: Path,
) -> None:
    settings = loopback_settings(tmp_path, BENCH_RUST_CLIENT="true", BENCH_MAX_CONCURRENCY="8",
                                 BENCH_DATASET="random-ids")  # fmt: skip
    console = recording_console()[0]
    try:
        deploy.up_role(settings, "agg", run_id="rust-flush", console=console)
        results = run_bench(settings, tag="rust", mode="agg", console=console)
    finally:
        deploy.down(settings, console, run_id="rust-flush")
    (line,) = read_points(results.with_name("rust.metrics.jsonl")).values()
    assert line.warmup_included  # no hook in native code: scraped before the warm-up
    assert line.observed is not None and line.observed.cache_flush is not None
    assert line.observed.cache_flush.when == "before the client"
    assert line.observed.cache_flush.done and line.observed.lateness is None
    # The one request more than measured is the warm-up, and the record says so.
    assert delta(line, "sglang-agg", "sglang:num_requests_total") == 16 + 1
