"""The SLO capacity search's choices, per-role accounting, goodput flags, and the verdict text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sglbench.errors import ConfigError
from sglbench.plan.bench import goodput_args
from sglbench.plan.capacity import Probe, answer, next_rate
from sglbench.record.accounting import per_gpu
from sglbench.record.schema import CapacityRecord, ModeRecord, RunRecord
from sglbench.report.analysis import measured_points
from sglbench.report.verdict import verdicts
from sglbench.results.load import load_results
from sglbench.settings import load_settings
from sglbench.types import Topology


def search(capacity: float, **knobs: Any) -> list[Probe]:
    """Run the search against a deployment that meets the SLOs up to ``capacity`` req/s."""
    probes: list[Probe] = []
    while (rate := next_rate(probes, **{"start": 1.0, "max_points": 12, "tolerance": 0.05,
                                        **knobs})) is not None:  # fmt: skip
        probes.append(Probe(rate, 0.95 if rate <= capacity else 0.5, rate <= capacity))
    return probes


@pytest.mark.parametrize("capacity", [0.3, 1.0, 7.3, 40.0])
def test_the_search_brackets_then_bisects_to_the_capacity(capacity: float) -> None:
    probes = search(capacity)
    found = answer(probes, 0.05)
    assert found.rate is not None and found.rate <= capacity < found.above  # type: ignore[operator]
    assert found.converged and (found.above - found.rate) / found.rate < 0.05  # type: ignore[operator]
    assert len(probes) <= 12


def test_the_search_stops_at_its_point_budget_and_says_it_did_not_converge() -> None:
    probes = search(7.3, max_points=4)
    found = answer(probes, 0.05)
    assert len(probes) == 4 and not found.converged
    assert found.rate == 4.0 and found.above == 8.0


def test_a_deployment_that_never_meets_the_slos_has_no_capacity() -> None:
    found = answer(search(0.0001), 0.05)
    assert found.rate is None and found.above is not None


def test_per_role_accounting_divides_by_the_role_that_produced_the_tokens() -> None:
    row = {"output_throughput": 3000.0, "input_throughput": 12000.0, "total_throughput": 15000.0,
           "mean_tpot_ms": 20.0}  # fmt: skip
    pd = per_gpu(row, Topology.disaggregated(1, 3))
    assert pd == {"output_tok_s_per_decode_gpu": 1000.0, "input_tok_s_per_prefill_gpu": 12000.0,
                  "total_tok_s_per_gpu": 3750.0, "tok_s_per_user": 50.0}  # fmt: skip
    agg = per_gpu(row, Topology.aggregated(4))
    assert agg["output_tok_s_per_decode_gpu"] == 750.0
    assert agg["input_tok_s_per_prefill_gpu"] == 3000.0


def test_slos_become_the_clients_goodput_flags_and_conflicts_are_refused() -> None:
    settings = load_settings(None, {}, {"BENCH_SLO_TTFT_MS": "500",
                                        "BENCH_SLO_ITL_MS": "20"}).settings  # fmt: skip
    assert goodput_args(settings) == ["--goodput", "ttft:500", "tpot:20"]
    for keys, key in (({"BENCH_SLO_ITL_MS": "20", "BENCH_SLO_TPOT_MS": "20"}, "BENCH_SLO_ITL_MS"),
                      ({"BENCH_SLO_TTFT_MS": "9", "BENCH_RUST_CLIENT": "true"}, "RUST_CLIENT"),
                      ({"BENCH_CAPACITY_SEARCH": "true"}, "BENCH_CAPACITY_SEARCH")):
        with pytest.raises(ConfigError, match=key):
            load_settings(None, {}, keys)


# --- the verdict -------------------------------------------------------------------------------

def row(tag: str, conc: int, out_tps: float, p99_itl: float, **extra: Any) -> dict[str, Any]:
    return {"tag": tag, "dataset_name": "random-ids", "random_input_len": 512,
            "random_output_len": 128, "max_concurrency": conc, "request_rate": float("inf"),
            "completed": 100, "duration": 10.0, "output_throughput": out_tps,
            "input_throughput": out_tps * 4, "total_throughput": out_tps * 5,
            "request_throughput": 10.0, "mean_ttft_ms": 50.0, "mean_e2e_latency_ms": 500.0,
            "p99_itl_ms": p99_itl, "mean_tpot_ms": p99_itl / 2, **extra}  # fmt: skip


def run_dir(tmp_path: Path, rows: dict[str, list[dict[str, Any]]],
            capacity: list[CapacityRecord] | None = None) -> Path:
    modes = [ModeRecord.of(Topology.aggregated(2)), ModeRecord.of(Topology.disaggregated())]
    record = RunRecord(run_id="r", modes=modes, capacity=capacity or [])
    tmp_path.mkdir(parents=True, exist_ok=True)
    record.save(tmp_path)
    for mode, lines in rows.items():
        (tmp_path / f"{mode}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return tmp_path


def verdict_of(path: Path, **kwargs: Any) -> list[str]:
    points = measured_points(load_results([path]))
    record = RunRecord.load(path)
    assert record is not None
    return [v.text for v in verdicts(points, record.capacity, attainment=0.9, slo_text="x",
                                     simulated=False, **kwargs)]  # fmt: skip


def test_without_slos_the_verdict_compares_tok_s_per_gpu_at_matched_p99_itl(
    tmp_path: Path,
) -> None:
    path = run_dir(tmp_path, {
        "agg_x2": [row("agg_x2_a", 8, 1000, 10), row("agg_x2_b", 64, 4000, 40)],
        "pd": [row("pd_a", 8, 800, 8), row("pd_b", 64, 3000, 20)],
    })  # fmt: skip
    (text,) = verdict_of(path)
    # At p99 ITL 20 ms (the highest both reach): agg x2 interpolates to 2000 tok/s, 1000 per
    # GPU of its 2; pd reaches 3000 tok/s there, 1500 per GPU of its 2.
    assert text.startswith("in 512 / out 128, n=100: at 2 GPUs, pd sustains 1.5e+03 output "
                           "tok/s per GPU at matched p99 ITL")
    assert "1.50x aggregated's (agg_x2: 1e+03)" in text


def test_a_difference_inside_the_spread_of_repeats_is_no_winner(tmp_path: Path) -> None:
    path = run_dir(tmp_path, {
        "agg_x2": [row("a1", 8, 2000, 10), row("a2", 8, 2600, 10)],
        "pd": [row("p1", 8, 2200, 10), row("p2", 8, 2600, 10)],
    })  # fmt: skip
    (text,) = verdict_of(path)
    assert "no measurable difference" in text


def test_capacity_answers_decide_and_name_the_winner(tmp_path: Path) -> None:
    capacity = [CapacityRecord(mode=m, gpus=2, input_len=512, output_len=128, rate=r,
                               attainment=0.95, above=r * 1.04, points=6, converged=True,
                               slos_ms={"ttft": 500}, target_attainment=0.9, done=True)
                for m, r in (("agg_x2", 8.0), ("pd", 12.0))]  # fmt: skip
    path = run_dir(tmp_path, {"agg_x2": [row("a", 8, 1000, 10)], "pd": [row("p", 8, 900, 10)]},
                   capacity)  # fmt: skip
    (text,) = verdict_of(path)
    assert "pd sustains 6 req/s per GPU under the SLOs" in text
    assert "1.50x aggregated's (agg_x2: 4)" in text and "(figure: SLO capacity)" in text


def test_the_crossover_along_concurrency_is_named(tmp_path: Path) -> None:
    path = run_dir(tmp_path, {
        "agg_x2": [row("a8", 8, 3000, 10), row("a64", 64, 4000, 30)],
        "pd": [row("p8", 8, 1000, 10), row("p64", 64, 6000, 30)],
    })  # fmt: skip
    (text,) = verdict_of(path)
    assert "The winner changes from agg_x2 to pd between concurrency 8 and 64" in text
