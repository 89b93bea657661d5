"""Checks of the workload keys together (no file or network access): one ``ConfigError`` line.

What SGLang 0.5.23's bench client would do wrong or silently differently is refused here, before
anything starts: ``generated-shared-prefix`` ignores ``--num-prompts`` (it sends groups x prompts
per group); ``mooncake`` replays only with ``--backend sglang``, ignores ``--request-rate`` and
downloads a trace when the path is empty; the Rust client supports neither dataset nor our
bursty arrivals. Checks that read files (a missing dataset, lengths over the model's context)
are ``sglbench.plan.workload``'s.
"""

from __future__ import annotations

import math

from sglbench.errors import ConfigError
from sglbench.settings.model import Settings

GSP = "generated-shared-prefix"
# The datasets SGLang's Rust client accepts (sglang/benchmark/rust_client.py).
RUST_DATASETS = ("random", "random-ids", "sharegpt")


def gsp_prompts_per_group(s: Settings) -> int:
    """Questions per prefix group: BENCH_GSP_PROMPTS_PER_GROUP, else BENCH_NUM_PROMPTS / groups."""
    if s.bench_gsp_prompts_per_group is not None:
        return s.bench_gsp_prompts_per_group
    return max(s.bench_num_prompts // s.bench_gsp_num_groups, 1)


def check_workload_keys(s: Settings) -> None:
    """Raise ``ConfigError`` for workload keys that do not fit together."""
    dataset = s.bench_dataset
    if s.bench_rust_client and dataset not in RUST_DATASETS:
        raise ConfigError(f"BENCH_RUST_CLIENT=true with BENCH_DATASET={dataset}: SGLang's Rust "
                          f"client supports only {', '.join(RUST_DATASETS)}; use the Python "
                          "client (BENCH_RUST_CLIENT=false)")
    if dataset == GSP:
        _check_gsp(s)
    if dataset == "mooncake":
        _check_trace(s)
    if s.bench_sharegpt_output_len is not None and dataset != "sharegpt":
        raise ConfigError(f"BENCH_SHAREGPT_OUTPUT_LEN={s.bench_sharegpt_output_len}: only "
                          f"BENCH_DATASET=sharegpt uses it (this run: {dataset}); unset it")
    if s.bench_burstiness != 1.0:
        _check_bursty(s)


def _check_gsp(s: Settings) -> None:
    groups, ppg = s.bench_gsp_num_groups, s.bench_gsp_prompts_per_group
    if ppg is not None and groups * ppg != s.bench_num_prompts:
        raise ConfigError(f"BENCH_GSP_PROMPTS_PER_GROUP={ppg} x BENCH_GSP_NUM_GROUPS={groups} = "
                          f"{groups * ppg} requests, but BENCH_NUM_PROMPTS="
                          f"{s.bench_num_prompts}: the client sends exactly groups x prompts per "
                          f"group (it ignores --num-prompts); set BENCH_NUM_PROMPTS="
                          f"{groups * ppg} or leave BENCH_GSP_PROMPTS_PER_GROUP empty")
    if ppg is None and s.bench_num_prompts % groups:
        raise ConfigError(f"BENCH_NUM_PROMPTS={s.bench_num_prompts} is not a multiple of "
                          f"BENCH_GSP_NUM_GROUPS={groups}: the client sends groups x prompts per "
                          "group; choose a multiple or set BENCH_GSP_PROMPTS_PER_GROUP")


def _check_trace(s: Settings) -> None:
    if s.bench_backend != "sglang":
        raise ConfigError(f"BENCH_DATASET=mooncake with BENCH_BACKEND={s.bench_backend}: the "
                          "client replays traces only with --backend sglang (others crash); set "
                          "BENCH_BACKEND=sglang")
    if not s.bench_dataset_path:
        raise ConfigError("BENCH_DATASET=mooncake without BENCH_DATASET_PATH: the client would "
                          "download a trace from GitHub; give a local trace JSONL")
    if any(math.isfinite(r) for r in s.bench_request_rate):
        raise ConfigError("BENCH_REQUEST_RATE with BENCH_DATASET=mooncake: the trace's "
                          "timestamps set the arrivals and the client ignores the rate; leave "
                          "BENCH_REQUEST_RATE=inf and scale with BENCH_TRACE_SLOWDOWN")


def _check_bursty(s: Settings) -> None:
    where = f"BENCH_BURSTINESS={s.bench_burstiness:g}"
    if s.bench_dataset == "mooncake":
        raise ConfigError(f"{where} with BENCH_DATASET=mooncake: the trace sets the arrivals; "
                          "leave BENCH_BURSTINESS=1")
    if s.bench_rust_client:
        raise ConfigError(f"{where} with BENCH_RUST_CLIENT=true: bursty arrivals are drawn in "
                          "sglbench's Python client worker; use the Python client")
    if any(math.isinf(r) for r in s.bench_request_rate):
        raise ConfigError(f"{where} with BENCH_REQUEST_RATE=inf: every request is sent at once, "
                          "so there are no inter-arrival times to shape; give finite rates")
