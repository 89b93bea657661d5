"""Sanity checks flag untrustworthy points; the fairness check finds differing workloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pandas import DataFrame as Frame

from sglbench.results.checks import (
    Requested,
    expected_output_mean,
    sanity_checks,
    workload_mismatches,
)
from sglbench.results.load import load_results
from tests.conftest import REFERENCE, needs_reference

pytestmark = needs_reference


def load_rows(tmp_path: Path, rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> Frame:
    """Write a run directory (``<mode>.jsonl`` + metadata.json) and load it."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    for mode, row in rows.items():
        (run / f"{mode}.jsonl").write_text(json.dumps(row) + "\n")
    (run / "metadata.json").write_text(json.dumps(meta))
    return load_results([run])


def real_row(name: str = "agg_n100_in128_out128_c8.jsonl", **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = json.loads((REFERENCE / name).read_text())
    return row | changes


def test_reference_results_are_sound_and_comparable() -> None:
    df = load_results([REFERENCE])
    assert sanity_checks(df) == []
    assert workload_mismatches(df) == []


def test_failed_requests_are_an_error(tmp_path: Path) -> None:
    df = load_rows(tmp_path, {"agg": real_row(completed=90)}, {"workload": {"num_prompts": 100}})
    [finding] = sanity_checks(df)
    assert (finding.check, finding.severity) == ("failed_requests", "error")
    assert "10 of 100 requests failed" in finding.message
    # The caller may know the prompt count better than the files do.
    df = load_rows(tmp_path, {"agg": real_row()}, {})
    assert [f.check for f in sanity_checks(df, Requested(num_prompts=120))] == ["failed_requests"]


def test_near_zero_ttft_and_itl_point_at_a_buffering_router(tmp_path: Path) -> None:
    row = real_row(median_ttft_ms=0.2, median_itl_ms=0.01)
    findings = sanity_checks(load_rows(tmp_path, {"pd": row}, {}))
    assert {f.check for f in findings} == {"near_zero_ttft", "near_zero_itl"}
    assert all(f.tag == "agg_n100_in128_out128_c8" for f in findings)
    assert "buffers" in findings[0].message


def test_expected_output_length_follows_the_range_ratio() -> None:
    assert expected_output_mean(128, 0.0)[0] == pytest.approx(64.5)  # uniform on [1, 128]
    assert expected_output_mean(128, 1.0) == (128.0, 0.0)
    assert expected_output_mean(100, 0.5)[0] == pytest.approx(75.0)


@pytest.mark.parametrize(
    ("ratio", "total_output", "ignore_eos", "flagged"),
    [
        (0.0, 6180, True, False),  # the real L/2 average with range ratio 0: fine
        (0.0, 3200, True, True),  # half of that: the server stopped early
        (0.0, 3200, None, False),  # ignore-eos unknown: EOS may end outputs by design
        (0.0, 3200, False, False),
        (1.0, 12800, True, False),  # every request exactly 128 tokens
        (1.0, 11000, True, True),
    ],
)
def test_short_outputs(
    tmp_path: Path, ratio: float, total_output: int, ignore_eos: bool | None, flagged: bool
) -> None:
    row = real_row(random_range_ratio=ratio, total_output_tokens=total_output)
    meta = {"workload": {"ignore_eos": ignore_eos}}
    checks = [f.check for f in sanity_checks(load_rows(tmp_path, {"agg": row}, meta))]
    assert ("short_outputs" in checks) is flagged


def test_simulated_points_are_one_info_finding(tmp_path: Path) -> None:
    rows = {"agg": real_row(), "pd": real_row("pd_intra_n100_in128_out128_c8.jsonl")}
    findings = sanity_checks(load_rows(tmp_path, rows, {"simulated": True}))
    [finding] = findings
    assert (finding.check, finding.severity) == ("simulated", "info")
    assert finding.message.startswith("2 of 2 points come from the simulator")


def test_client_limited_point_is_flagged(tmp_path: Path) -> None:
    meta = {"points": [{"tag": "agg_n100_in128_out128_c8", "client_limited": True}]}
    findings = sanity_checks(load_rows(tmp_path, {"agg": real_row()}, meta))
    assert [f.check for f in findings] == ["client_limited"]


def test_differing_workloads_at_one_sweep_point_are_named(tmp_path: Path) -> None:
    rows = {
        "agg": real_row(tag="agg"),
        "pd": real_row("pd_intra_n100_in128_out128_c8.jsonl", random_range_ratio=0.5),
    }
    [problem] = workload_mismatches(load_rows(tmp_path, rows, {}))
    assert problem == (
        "input_len=128 output_len=128 max_concurrency=8 request_rate=inf: "
        "agg (range_ratio=0) vs pd (range_ratio=0.5)"
    )


def test_different_sweep_points_are_not_a_mismatch(tmp_path: Path) -> None:
    rows = {"agg": real_row(), "pd": real_row("pd_intra_n100_in128_out128_c32.jsonl")}
    assert workload_mismatches(load_rows(tmp_path, rows, {})) == []
