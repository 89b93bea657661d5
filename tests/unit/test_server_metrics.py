"""Server metrics from pages in SGLang's format: parsing, deltas, breakdown, KV table, hit rate.

The fixtures (``tests/fixtures/sglang_metrics``) are SGLang 0.5.23 multiprocess pages written
from the research note; between ``before`` and ``after`` 10 requests were measured with:

    prefill: bootstrap 0.2 s, queue 0.5 s, prefill_forward 1.5 s, transfer stage 0.8 s in total;
             KV transfer 800 ms, 560 MiB, speeds summing to 7.0 GB/s; 1 transfer failure;
             3000 computed + 1000 cached prompt tokens
    decode:  decode_waiting 0.1 s, fake_output 0.05 s, decode_bootstrap 0.3 s,
             decode_transferred 2.5 s, TTFT 3.2 s in total; the same transfer failure
    agg:     queue 0.3 s, prefill_forward 1.2 s, TTFT 2.0 s; 2000 computed + 6000 cached tokens
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sglbench.execute.scrape import Scrape, deltas, gauge_lines, parse
from sglbench.record.metrics import (
    EndpointMetrics,
    EndpointRole,
    PointMetrics,
    append_point,
    metrics_file_for,
    read_points,
)
from sglbench.record.schema import ModeRecord, PointRecord, RunRecord, Workload
from sglbench.report.breakdown import ttft_breakdown
from sglbench.report.build import build_report
from sglbench.results import point_checks
from sglbench.results.checks import sanity_checks
from sglbench.results.load import load_results
from sglbench.results.server import kv_transfer, prefix_hit_rate, summarize
from sglbench.types import Topology

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sglang_metrics"


def page(name: str) -> Scrape:
    scrape = parse((FIXTURES / f"{name}.prom").read_text())
    assert scrape.error is None
    return scrape


def endpoint(role: EndpointRole, name: str | None = None) -> EndpointMetrics:
    found, error = deltas(page(f"{role}_before"), page(f"{role}_after"))
    assert error is None
    return EndpointMetrics(name=name or role, role=role, url=f"http://{role}:1", deltas=found)


def pd_point() -> PointMetrics:
    return PointMetrics(tag="pd_x", endpoints=[endpoint("prefill"), endpoint("decode"),
                                               endpoint("router")])  # fmt: skip


def test_parse_keeps_counter_totals_drops_buckets_and_noise_labels() -> None:
    scrape = page("prefill_after")
    names = {name for name, _ in scrape.totals}
    assert "sglang:num_transfer_failed_reqs_total" in names  # the sample keeps _total
    assert "sglang:queue_time_seconds_sum" in names and "sglang:queue_time_seconds_count" in names
    assert not any(n.endswith("_bucket") for n in names)
    assert all("model_name" not in dict(labels) for _, labels in scrape.totals)
    # Gauges: the pid-labelled retracted gauge is not sampled, the NaN one never stored.
    assert scrape.gauges["sglang:num_prefill_bootstrap_queue_reqs"] == 2.0
    assert "sglang:fwd_occupancy" not in scrape.gauges


def test_router_page_without_help_lines_parses() -> None:
    found, error = deltas(page("router_before"), page("router_after"))
    assert error is None
    by_name = {s.name: s for s in found}
    assert by_name["smg_router_requests_total"].delta == 10
    assert by_name["smg_router_requests_total"].labels["backend_type"] == "pd"


def test_single_process_created_series_are_dropped() -> None:
    text = ("# HELP sglang:num_requests_total Number of requests processed.\n"
            "# TYPE sglang:num_requests_total counter\n"
            'sglang:num_requests_total{engine_type="unified"} 3.0\n'
            'sglang:num_requests_created{engine_type="unified"} 1.7e9\n')  # fmt: skip
    assert [name for name, _ in parse(text).totals] == ["sglang:num_requests_total"]


def test_a_counter_that_went_down_is_a_restart_not_a_delta() -> None:
    found, error = deltas(page("prefill_after"), page("prefill_before"))
    assert found == [] and error is not None and "restarted" in error


def test_a_malformed_page_is_an_error_not_an_exception() -> None:
    assert parse("sglang:x{engine_type=unquoted} 1\n").error is not None


def test_pd_ttft_breakdown_from_fixture_scrapes() -> None:
    result = ttft_breakdown(pd_point(), client_ttft_ms=400.0)
    segments = {name: round(value or 0.0, 6) for name, value in result.segments}
    assert segments == {"bootstrap": 20.0, "queue on prefill": 50.0, "prefill compute": 150.0,
                        "KV transfer": 80.0, "decode first step": 15.0}  # fmt: skip
    assert result.kind == "pd" and result.rest_ms == pytest.approx(85.0)
    assert result.server_ttft_ms == pytest.approx(320.0)
    # decode_bootstrap + decode_transferred: a cross-check, never stacked.
    assert result.decode_waited_ms == pytest.approx(280.0)
    assert result.notes == []


def test_agg_ttft_breakdown_from_fixture_scrapes() -> None:
    point = PointMetrics(tag="agg_x", endpoints=[endpoint("agg")])
    result = ttft_breakdown(point, client_ttft_ms=180.0)
    assert [(n, round(v or 0, 6)) for n, v in result.segments] == [("queue", 30.0),
                                                                   ("prefill", 120.0)]
    assert result.rest_ms == pytest.approx(30.0) and result.server_ttft_ms == pytest.approx(200.0)


def test_stages_above_the_client_ttft_are_noted() -> None:
    result = ttft_breakdown(pd_point(), client_ttft_ms=250.0)
    assert result.rest_ms == pytest.approx(-65.0)
    assert any("exceed the client's TTFT by 65 ms" in n for n in result.notes)


def test_kv_transfer_table_from_fixture_scrapes() -> None:
    kv = kv_transfer(pd_point())
    assert kv.transfers == 10 and kv.mb_per_request == pytest.approx(56.0)
    assert kv.latency_ms == pytest.approx(80.0)
    assert kv.gbps == pytest.approx((560 / 1024) / 0.8)  # all bytes over all transfer time
    assert kv.gbps_mean == pytest.approx(0.7)  # mean of per-request speeds
    assert kv.bootstrap_ms == {"prefill": pytest.approx(20.0), "decode": pytest.approx(15.0)}
    assert kv.alloc_ms["decode"] == pytest.approx(5.0)
    assert kv.transfer_failed == {"prefill": 1.0, "decode": 1.0}


def test_hit_rate_from_counter_deltas_not_the_gauge() -> None:
    # The fixtures' cache_hit_rate gauge says 0.9; the point's counters say otherwise.
    assert prefix_hit_rate(pd_point()) == pytest.approx(0.25)
    assert prefix_hit_rate(PointMetrics(tag="a", endpoints=[endpoint("agg")])) == pytest.approx(
        0.75)


def test_one_failed_transfer_counted_by_both_roles_is_one_failure_and_a_finding() -> None:
    summary = summarize(pd_point())
    assert (summary.transfer_failed, summary.bootstrap_failed) == (1.0, 0.0)
    message = point_checks.kv_failure_message({"kv_bootstrap_failed": 0.0,
                                               "kv_transfer_failed": summary.transfer_failed})
    assert message is not None and "1 KV-transfer failure" in message


def test_a_failed_scrape_is_kept_as_an_error_and_its_role_is_not_used() -> None:
    broken = EndpointMetrics(name="decode", role="decode", url="http://d:1",
                             error="after: no answer at http://d:1/metrics (ConnectError)")
    point = PointMetrics(tag="pd_y", endpoints=[endpoint("prefill"), broken])
    assert summarize(point).error is not None
    result = ttft_breakdown(point, client_ttft_ms=400.0)
    assert dict(result.segments)["decode first step"] is None  # decode is not trusted
    assert "not observed: decode first step" in result.notes


def test_gauge_filter_keeps_only_sampled_gauges() -> None:
    text = (FIXTURES / "decode_after.prom").read_text()
    lines = gauge_lines(text).splitlines()
    assert any(line.startswith("sglang:num_decode_transfer_queue_reqs{") for line in lines)
    assert not any("queue_time_seconds" in line for line in lines)
    assert parse(gauge_lines(text)).gauges["sglang:num_decode_transfer_queue_reqs"] == 3.0


def test_metrics_file_round_trip_and_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(pd_point().model_dump_json() + "\n" + '{"tag": "pd_cut", "endp')
    found = read_points(path)
    assert list(found) == ["pd_x"]
    assert ttft_breakdown(found["pd_x"], 400.0).rest_ms == pytest.approx(85.0)


# ---- from result files to the report ---------------------------------------------------------

def write_run(run_dir: Path, observed: dict[str, Any], metrics: PointMetrics) -> None:
    """A run directory as compare writes it: metadata, one agg row, the metrics line."""
    run_dir.mkdir(parents=True)
    tag = metrics.tag
    RunRecord(run_id=run_dir.name, schema=2, modes=[ModeRecord.of(Topology.aggregated())],
              workload=Workload(dataset="random-ids", num_prompts=10),
              points=[PointRecord.model_validate({"tag": tag, "mode": "agg", "status": "ok",
                                                  "num_prompts": 10, "observed": observed})],
              ).save(run_dir)  # fmt: skip
    row = {"tag": tag, "backend": "sglang", "dataset_name": "random-ids", "completed": 10,
           "random_input_len": 512, "random_output_len": 16, "random_range_ratio": 1.0,
           "request_rate": 8.0, "max_concurrency": 4, "duration": 2.0, "mean_ttft_ms": 180.0,
           "median_ttft_ms": 170.0, "median_itl_ms": 10.0, "total_output_tokens": 160,
           "output_throughput": 80.0, "mean_e2e_latency_ms": 400.0}
    (run_dir / "agg.jsonl").write_text(json.dumps(row) + "\n")
    append_point(run_dir / "metrics.jsonl", metrics)


def test_the_report_reads_the_breakdown_and_findings_from_result_files(tmp_path: Path) -> None:
    agg = PointMetrics(tag="agg_p", endpoints=[endpoint("agg", "sglang-agg")])
    observed = {
        "cache_flush": {"done": False, "when": "after warm-up", "workers": [
            {"name": "sglang-agg", "url": "http://a:1", "ok": False, "status": 400,
             "message": "Cache not flushed because there are pending requests."}]},
        "lateness": {"arrivals": "poisson", "requests": 10, "median_ms": 2.0, "p90_ms": 3.0,
                     "p99_ms": 4.0, "max_ms": 5.0, "scheduled_s": 1.0, "sent_s": 1.3},
    }  # fmt: skip
    write_run(tmp_path / "results" / "run1", observed, agg)

    df = load_results([tmp_path / "results"])
    assert len(df) == 1  # metrics.jsonl is not a result file
    row = df.iloc[0]
    assert row["prefix_hit_rate"] == pytest.approx(0.75) and row["cache_flushed"] == False  # noqa: E712
    checks = {f.check: f for f in sanity_checks(df)}
    assert "sglang-agg did not answer 200" in checks["warm_cache"].message
    assert "30% after its poisson schedule ended" in checks["client_late"].message

    report = build_report([tmp_path / "results"], tmp_path / "report", None, None)
    text = report.markdown.read_text()
    assert "| agg_p | agg | 180.0 | 30.0 | 120.0 | 30.0 | 200.0 |" in text
    assert {"ttft_breakdown.png", "queue_depths.png", "kv_cache.png"} <= {
        p.name for p in report.images}


def test_bench_results_keep_their_metrics_beside_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    row = {"tag": "mine", "dataset_name": "random-ids", "completed": 10, "mean_ttft_ms": 180.0,
           "duration": 2.0, "output_throughput": 80.0, "mean_e2e_latency_ms": 400.0}
    (results / "mine.jsonl").write_text(json.dumps(row) + "\n")
    point = PointMetrics(tag="mine", endpoints=[endpoint("agg")])
    append_point(metrics_file_for(results / "mine.jsonl"), point)
    assert (results / "mine.metrics.jsonl").is_file()
    df = load_results([results])
    assert df["tag"].tolist() == ["mine"] and df["prefix_hit_rate"].tolist() == [pytest.approx(
        0.75)]
