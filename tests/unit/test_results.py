"""The results loader reads every bench_serving version we meet, and says so when it cannot."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sglbench.errors import ResultsError
from sglbench.results.load import COLUMNS, load_results
from tests.conftest import REFERENCE, needs_reference

# Real GH200 results beside the checkout (../shared/reference-results), read only.
REFERENCE_FILES = sorted(REFERENCE.glob("*.jsonl"))

# Raw key -> loaded column, for numbers the loader must carry over unchanged.
SAME_NUMBERS = {
    "output_throughput": "output_throughput",
    "total_throughput": "total_throughput",
    "request_throughput": "request_throughput",
    "mean_ttft_ms": "mean_ttft_ms",
    "p99_ttft_ms": "p99_ttft_ms",
    "median_itl_ms": "median_itl_ms",
    "mean_tpot_ms": "mean_tpot_ms",
    "mean_e2e_latency_ms": "mean_e2e_ms",
    "p99_e2e_latency_ms": "p99_e2e_ms",
    "duration": "duration_s",
    "completed": "completed",
    "total_output_tokens": "total_output_tokens",
}


def reference_row(name: str = "agg_n100_in512_out128_c8.jsonl") -> dict[str, Any]:
    """A real GH200 row (sglang 0.5.5 client, 40 keys)."""
    row: dict[str, Any] = json.loads((REFERENCE / name).read_text())
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_reference
def test_every_reference_file_loads_with_its_own_numbers() -> None:
    df = load_results([REFERENCE])
    assert len(df) == len(REFERENCE_FILES) == 45
    assert list(df.columns) == list(COLUMNS)
    for path in REFERENCE_FILES:
        raw = json.loads(path.read_text())
        row = df[df["file"] == path.name].iloc[0]
        for key, column in SAME_NUMBERS.items():
            assert row[column] == raw[key], (path.name, column)


@needs_reference
def test_reference_modes_prompt_counts_and_infinite_rate() -> None:
    df = load_results([REFERENCE])
    assert set(df["mode"]) == {
        "agg", "pd_intra", "pd_inter", "pd_1p1d", "pd_1p2d", "pd_1p4d", "pd_1p8d",
    }  # fmt: skip
    assert all(math.isinf(r) for r in df["request_rate"])  # the bare `Infinity` token
    n50 = df[df["tag"] == "pd_intra_n50_in512_out128_c8"].iloc[0]
    assert (n50["num_prompts"], n50["input_len"], n50["output_len"]) == (50, 512, 128)
    # The odd one out: no n<count> in its name, so the prompt count is what completed.
    odd = df[df["file"] == "pd_inter_node_gh200_a100.jsonl"].iloc[0]
    assert (odd["tag"], odd["mode"], odd["num_prompts"]) == ("pd_inter_node", "pd_inter", 50)
    assert not df["simulated"].any()
    assert set(df["server_version"]) == {"0.5.5.post3"}
    assert (df["failed"] == 0).all()


@needs_reference
def test_old_client_row_without_tag_takes_the_file_name(tmp_path: Path) -> None:
    row = reference_row()
    # sglang 0.5.2 wrote 35 keys: no tag, no text/vision token split, no p95 ITL, ...
    for key in ("tag", "total_input_text_tokens", "total_input_vision_tokens", "p95_itl_ms",
                "accept_length"):  # fmt: skip
        row.pop(key)
    assert len(row) == 35
    write_jsonl(tmp_path / "disagg_run1.jsonl", [row])
    loaded = load_results([tmp_path]).iloc[0]
    assert (loaded["tag"], loaded["mode"]) == ("disagg_run1", "pd")
    assert loaded["output_throughput"] == row["output_throughput"]


@needs_reference
def test_current_client_row_with_49_keys_and_null_server_info(tmp_path: Path) -> None:
    row = reference_row() | {"tag": "pd_cg1n1_cg1n2", "server_info": None}
    for metric in ("ttft", "tpot", "itl", "e2e_latency"):
        row[f"p90_{metric}_ms"] = row[f"p99_{metric}_ms"] * 0.9
        row[f"p95_{metric}_ms"] = row[f"p99_{metric}_ms"] * 0.95
    row |= {"max_output_tokens_per_s": 2000.0, "max_concurrent_requests": 8}
    assert len(row) == 49
    path = write_jsonl(tmp_path / "pd_cg1n1_cg1n2.jsonl", [row, row])
    assert "Infinity" in path.read_text()  # json.dumps writes inf as the client does
    df = load_results([path])
    assert len(df) == 2 and set(df["mode"]) == {"pd"} and set(df["line"]) == {1, 2}
    assert df["server_version"].isna().all()


@needs_reference
def test_run_directory_uses_metadata(tmp_path: Path) -> None:
    run = tmp_path / "results" / "20261129-0501"
    write_jsonl(run / "agg.jsonl", [reference_row() | {"tag": "c8"}])
    write_jsonl(run / "pd_2p1d.jsonl", [reference_row("pd_intra_n100_in512_out128_c8.jsonl")])
    write_jsonl(run / "client_cpu.jsonl", [{"cpu": 12.5}])  # not a mode: not a result file
    metadata = {
        "run_id": "20261129-0501", "simulated": True, "gpus_per_mode": {"agg": 1},
        "workload": {"dataset": "random", "num_prompts": 120, "seed": 7, "ignore_eos": True},
        "points": [{"tag": "c8", "client_limited": True}],
    }  # fmt: skip
    (run / "metadata.json").write_text(json.dumps(metadata))
    shutil.copy(REFERENCE / "agg_n50_in128_out64_c8.jsonl", tmp_path / "results")
    df = load_results([tmp_path / "results"]).set_index("file")
    agg, pd3 = df.loc["agg.jsonl"], df.loc["pd_2p1d.jsonl"]
    assert (agg["mode"], agg["run_id"], agg["seed"], agg["ignore_eos"]) == (
        "agg", "20261129-0501", 7, True,
    )  # fmt: skip
    assert (agg["num_prompts"], agg["failed"]) == (120, 20)  # 100 of 120 completed
    assert agg["simulated"] and agg["client_limited"] is True
    assert (agg["gpus"], agg["gpus_source"]) == (1, "metadata")
    assert (pd3["mode"], pd3["gpus"], pd3["gpus_source"]) == ("pd_2p1d", 3, "assumed")
    plain = df.loc["agg_n50_in128_out64_c8.jsonl"]
    assert pd.isna(plain["run_id"]) and not plain["simulated"]


@needs_reference
def test_simulated_flag_in_server_info(tmp_path: Path) -> None:
    info = {"prefill": [{"simulated": True, "version": "sim"}], "decode": [{"simulated": True}]}
    write_jsonl(tmp_path / "x.jsonl", [reference_row() | {"tag": "x", "server_info": info}])
    row = load_results([tmp_path]).iloc[0]
    assert row["simulated"] and row["mode"] == "pd" and row["server_version"] == "sim"


@needs_reference
def test_per_request_errors_count_as_failures(tmp_path: Path) -> None:
    row = reference_row() | {"completed": 98, "errors": [""] * 98 + ["timeout", "reset"]}
    write_jsonl(tmp_path / "agg.jsonl", [row])
    loaded = load_results([tmp_path]).iloc[0]
    assert (loaded["num_prompts"], loaded["failed"]) == (100, 2)


def test_missing_path_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ResultsError) as err:
        load_results([tmp_path / "nope"])
    message = str(err.value)
    assert "nope" in message and "invoke bench --tag" in message and "\n" not in message
    assert err.value.exit_code == 2


def test_empty_directory_and_empty_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"no \*\.jsonl result files"):
        load_results([tmp_path])
    (tmp_path / "agg.jsonl").write_text("\n")
    with pytest.raises(ResultsError, match="hold no benchmark rows"):
        load_results([tmp_path])


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "agg.jsonl"
    path.write_text('{"completed": 1\n')
    with pytest.raises(ResultsError, match=r"agg.jsonl:1: not valid JSON"):
        load_results([path])
    path.write_text('\n{"hello": "world"}\n')
    with pytest.raises(ResultsError, match=r"agg.jsonl:2: not a bench_serving result row"):
        load_results([path])
