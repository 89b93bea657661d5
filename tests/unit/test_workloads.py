"""Workloads beyond random lengths: settings, client flags, fingerprint and up-front checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from sglbench.errors import ConfigError
from sglbench.plan.bench import bench_args
from sglbench.plan.sweep import workload_of
from sglbench.plan.workload import context_of_config, model_context
from sglbench.plan.workload_checks import check_workload
from sglbench.record.schema import Workload
from sglbench.settings import Settings, load_settings

GSP = {"BENCH_DATASET": "generated-shared-prefix", "BENCH_NUM_PROMPTS": "8",
       "BENCH_GSP_NUM_GROUPS": "2", "BENCH_GSP_SYSTEM_PROMPT_LEN": "256",
       "BENCH_GSP_QUESTION_LEN": "16", "BENCH_GSP_OUTPUT_LEN": "8"}  # fmt: skip


def make(**keys: str) -> Settings:
    """Settings from KEY=value overrides only (no .env, no environment)."""
    return load_settings(None, {}, keys).settings


def flags(settings: Settings) -> dict[str, list[str]]:
    """The bench client's flags for the first point, flag -> values (repeats kept in order)."""
    argv = bench_args(settings, base_url="http://x:1", tag="t", output_file=Path("o"), pd=False)
    found: dict[str, list[str]] = {}
    for i, word in enumerate(argv):
        if word.startswith("--"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
            found.setdefault(word, []).append(value)
    return found


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty HF cache: nothing on this machine decides what a model's context is."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def write_sharegpt(path: Path, count: int) -> Path:
    turns = [{"from": "human", "value": "What is disaggregated serving?"},
             {"from": "gpt", "value": "Prefill and decode on different GPUs."}]  # fmt: skip
    path.write_text(json.dumps([{"conversations": turns}] * count + [{"conversations": turns[:1]}]))
    return path


def write_trace(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- client flags ------------------------------------------------------------------------------

def test_shared_prefix_settings_give_the_client_its_gsp_flags() -> None:
    got = flags(make(**GSP))
    assert got["--dataset-name"] == ["generated-shared-prefix"]
    assert (got["--gsp-num-groups"], got["--gsp-prompts-per-group"]) == (["2"], ["4"])
    assert (got["--gsp-system-prompt-len"], got["--gsp-question-len"],
            got["--gsp-output-len"]) == (["256"], ["16"], ["8"])  # fmt: skip
    # After its warm-up our worker flushes every worker at the client's own flush moment.
    assert "--flush-cache" in got and "--cache-report" in got


def test_explicit_prompts_per_group_must_give_the_prompt_count() -> None:
    assert flags(make(**GSP, BENCH_GSP_PROMPTS_PER_GROUP="4"))["--gsp-prompts-per-group"] == ["4"]
    with pytest.raises(ConfigError, match=r"BENCH_GSP_PROMPTS_PER_GROUP=3 x BENCH_GSP_NUM_GROUPS"
                                          r"=2 = 6 requests, but BENCH_NUM_PROMPTS=8"):
        make(**GSP, BENCH_GSP_PROMPTS_PER_GROUP="3")
    with pytest.raises(ConfigError, match="BENCH_NUM_PROMPTS=9 is not a multiple of "
                                          "BENCH_GSP_NUM_GROUPS=2"):
        make(**{**GSP, "BENCH_NUM_PROMPTS": "9"})


def test_trace_replay_flags(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0}])
    got = flags(make(BENCH_DATASET="mooncake", BENCH_DATASET_PATH=str(trace),
                     BENCH_TRACE_SLOWDOWN="2", BENCH_NUM_PROMPTS="1"))  # fmt: skip
    assert got["--mooncake-slowdown-factor"] == ["2"] and "--use-trace-timestamps" in got
    assert got["--dataset-path"] == [str(trace)]


def test_sharegpt_gets_its_output_len_and_the_model_context() -> None:
    got = flags(make(BENCH_DATASET="sharegpt", BENCH_SHAREGPT_OUTPUT_LEN="32", SIMULATE="true"))
    assert got["--sharegpt-output-len"] == ["32"]
    assert got["--sharegpt-context-len"] == ["32768"]  # the simulator profile's context


def test_rust_client_gets_no_flush_or_cache_report_flags() -> None:
    got = flags(make(BENCH_RUST_CLIENT="true", BENCH_DATASET="random-ids"))
    assert "--flush-cache" not in got and "--cache-report" not in got


def test_flush_can_be_turned_off_and_servers_export_metrics_by_default() -> None:
    from sglbench.plan.servers import launch_args

    assert "--flush-cache" not in flags(make(BENCH_FLUSH_CACHE="false"))
    assert "--enable-metrics" in launch_args(make(), "prefill")
    assert "--enable-metrics" not in launch_args(make(BENCH_SERVER_METRICS="false"), "agg")


def test_workload_flags_are_refused_in_extra_args() -> None:
    with pytest.raises(ConfigError, match="BENCH_EXTRA_ARGS: --gsp-num-groups is set from "
                                          "BENCH_GSP_NUM_GROUPS"):
        make(BENCH_EXTRA_ARGS="--gsp-num-groups 4")


# ---- one-line errors of keys that do not fit together --------------------------------------

@pytest.mark.parametrize(("keys", "error"), [
    ({"BENCH_DATASET": "mooncake", "BENCH_DATASET_PATH": "t.jsonl",
      "BENCH_BACKEND": "sglang-oai"}, "replays traces only with --backend sglang"),
    ({"BENCH_DATASET": "mooncake"}, "would download a trace from GitHub"),
    ({"BENCH_DATASET": "mooncake", "BENCH_DATASET_PATH": "t.jsonl", "BENCH_REQUEST_RATE": "4"},
     "leave BENCH_REQUEST_RATE=inf"),
    ({"BENCH_BURSTINESS": "0.3"}, "BENCH_REQUEST_RATE=inf: every request is sent at once"),
    ({"BENCH_BURSTINESS": "0.3", "BENCH_REQUEST_RATE": "4", "BENCH_RUST_CLIENT": "true"},
     "use the Python client"),
    ({**GSP, "BENCH_RUST_CLIENT": "true"}, "Rust client supports only random, random-ids"),
    ({"BENCH_SHAREGPT_OUTPUT_LEN": "16"}, "only BENCH_DATASET=sharegpt uses it"),
])  # fmt: skip
def test_keys_that_do_not_fit_together(keys: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        make(**keys)


# ---- the fingerprint ------------------------------------------------------------------------

def test_the_workload_fingerprint_holds_the_new_keys() -> None:
    gsp = workload_of(make(**GSP))
    assert (gsp.gsp_num_groups, gsp.gsp_prompts_per_group, gsp.gsp_system_prompt_len) == (2, 4,
                                                                                         256)
    longer = workload_of(make(**{**GSP, "BENCH_GSP_SYSTEM_PROMPT_LEN": "512"}))
    assert gsp.diff(longer) == ["gsp_system_prompt_len: 256 -> 512"]
    bursty = workload_of(make(BENCH_BURSTINESS="0.25", BENCH_REQUEST_RATE="8"))
    assert bursty.burstiness == 0.25 and bursty.variant() == "burstiness 0.25"
    assert workload_of(make(BENCH_FLUSH_CACHE="false")).variant() == "warm cache"


def test_a_run_recorded_before_the_new_keys_still_resumes() -> None:
    old = Workload.model_validate({k: v for k, v in workload_of(make()).model_dump().items()
                                   if not k.startswith(("gsp_", "trace_", "burst"))})
    assert old.diff(workload_of(make())) == []


# ---- files and lengths, before anything starts -----------------------------------------------

def test_missing_and_invalid_dataset_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        check_workload(make(BENCH_DATASET="sharegpt", BENCH_DATASET_PATH=str(tmp_path / "x")))
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ConfigError, match=r"invalid JSON .* the client would download ShareGPT"):
        check_workload(make(BENCH_DATASET="random", BENCH_DATASET_PATH=str(bad)))


def test_a_file_with_fewer_conversations_than_prompts_is_refused(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "s.json", 3)
    check_workload(make(BENCH_DATASET="sharegpt", BENCH_DATASET_PATH=str(path),
                        BENCH_NUM_PROMPTS="3"))  # fmt: skip
    with pytest.raises(ConfigError, match="3 conversations with two turns, BENCH_NUM_PROMPTS=4"):
        check_workload(make(BENCH_DATASET="sharegpt", BENCH_DATASET_PATH=str(path),
                            BENCH_NUM_PROMPTS="4"))  # fmt: skip


def test_trace_records_are_checked(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0}, {"input_length": 5}])
    with pytest.raises(ConfigError, match="line 2: not a trace record"):
        check_workload(make(BENCH_DATASET="mooncake", BENCH_DATASET_PATH=str(trace),
                            BENCH_NUM_PROMPTS="2"))  # fmt: skip
    with pytest.raises(ConfigError, match="2 trace records, BENCH_NUM_PROMPTS=3"):
        check_workload(make(BENCH_DATASET="mooncake", BENCH_DATASET_PATH=str(
            write_trace(tmp_path / "u.jsonl", [{"timestamp": 0}, {"timestamp": 1}])),
            BENCH_NUM_PROMPTS="3"))


def test_long_context_points_are_checked_against_the_simulator_profile() -> None:
    fits = make(SIMULATE="true", BENCH_INPUT_LEN="4096,16384,32000", BENCH_OUTPUT_LEN="64")
    assert check_workload(fits) is not None
    over = make(SIMULATE="true", BENCH_INPUT_LEN="4096,32768", BENCH_OUTPUT_LEN="64")
    with pytest.raises(ConfigError, match=r"BENCH_INPUT_LEN=32768 \+ BENCH_OUTPUT_LEN=64 = 32832 "
                                          r"tokens per request, over the model's context of "
                                          r"32768 \(from the simulator profile gh200"):
        check_workload(over)


def test_shared_prefix_and_trace_lengths_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"BENCH_GSP_SYSTEM_PROMPT_LEN .* over the model's "
                                          r"context of 1024"):
        check_workload(make(**{**GSP, "BENCH_GSP_SYSTEM_PROMPT_LEN": "1020"},
                            BENCH_MODEL_CONTEXT_LEN="1024"))
    trace = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0, "hash_ids": [1]},
                                               {"timestamp": 9, "hash_ids": list(range(9))}])
    with pytest.raises(ConfigError, match=r"trace line 2 .* over the model's context of 1024"):
        check_workload(make(BENCH_DATASET="mooncake", BENCH_DATASET_PATH=str(trace),
                            BENCH_NUM_PROMPTS="2", BENCH_MODEL_CONTEXT_LEN="1024"))


def test_context_from_a_local_model_config_and_from_server_args(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    context = model_context(make(MODEL_PATH=str(model)))
    assert context is not None and (context.tokens, context.source) == (4096, str(model /
                                                                                 "config.json"))
    given = model_context(make(MODEL_PATH=str(model),
                               PREFILL_EXTRA_ARGS="--context-length 2048"))  # fmt: skip
    assert given is not None and (given.tokens, given.source) == (2048, "--context-length in "
                                                                  "PREFILL_EXTRA_ARGS")
    assert model_context(make(MODEL_PATH="org/not-cached")) is None  # unknown: not checked


@pytest.mark.parametrize(("config", "tokens"), [
    ({"max_position_embeddings": 32768}, 32768),
    ({"seq_length": 8192, "max_position_embeddings": 2048}, 8192),  # SGLang's key order
    ({"max_position_embeddings": 32768, "rope_scaling": {"type": "yarn", "factor": 4.0}}, 131072),
    ({"max_position_embeddings": 8192,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, 8192),
    ({"text_config": {"max_position_embeddings": 16384}}, 16384),
    ({}, 2048),
])  # fmt: skip
def test_context_of_a_config_as_sglang_derives_it(config: dict[str, Any], tokens: int) -> None:
    assert context_of_config(config) == tokens
