"""Checks on loaded results: sanity of each point, and fairness of a comparison.

Sanity checks flag what makes a number untrustworthy (failed requests, a buffering router,
outputs shorter than asked, a simulated backend, a saturated load generator). The fairness check
refuses to compare modes whose workloads differ at the same sweep point.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from sglbench.display import as_number
from sglbench.results import point_checks
from sglbench.results.load import records

Severity = Literal["error", "warning", "info"]
CheckName = Literal[
    "failed_requests", "near_zero_ttft", "near_zero_itl", "short_outputs", "simulated",
    "client_limited", "warm_cache", "client_late", "kv_failures", "metrics_missing",
]  # fmt: skip

# Sweep axes may differ between points; everything else in a workload must match across modes.
SWEEP_AXES = ("input_len", "output_len", "max_concurrency", "request_rate")
FIXED_WORKLOAD = ("dataset", "num_prompts", "range_ratio", "seed", "ignore_eos", "warmup",
                  "workload_variant")
WORKLOAD_KEY = (*FIXED_WORKLOAD, *SWEEP_AXES)

# Below these a real streaming server cannot go; seen only when a router buffers the stream.
NEAR_ZERO_TTFT_MS = 1.0
NEAR_ZERO_ITL_MS = 0.5


@dataclass(frozen=True)
class Requested:
    """What the load generator was asked to do at one point (None: not known)."""

    dataset: str | None = None
    num_prompts: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    range_ratio: float | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    warmup: int | None = None


@dataclass(frozen=True)
class Finding:
    """One sanity problem found in one point (or, for ``simulated``, in a set of points)."""

    check: CheckName
    severity: Severity
    tag: str
    message: str


def sanity_checks(df: pd.DataFrame, requested: Requested | None = None) -> list[Finding]:
    """Check every loaded point for numbers that should not be trusted as they are.

    Args:
        df: a frame from ``load_results``.
        requested: what was asked, when the caller knows better than the rows (prompt count,
            ignore-eos); fields left None fall back to the rows and the run metadata.

    Returns:
        Findings, errors first; an empty list when every point looks sound.
    """
    asked = requested or Requested()
    findings: list[Finding] = []
    for row in records(df):
        findings.extend(_point_findings(row, asked))
    simulated = sorted({str(r["tag"]) for r in records(df) if r["simulated"]})
    if simulated:
        shown = ", ".join(simulated[:3]) + (
            f" and {len(simulated) - 3} more" if len(simulated) > 3 else ""
        )
        count = int(df["simulated"].sum())
        findings.append(
            Finding(
                "simulated",
                "info",
                shown,
                f"{count} of {len(df)} points come from the simulator (sglbench.sim), "
                "not from GPUs: use them to test the pipeline, not to judge hardware",
            )
        )
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: order[f.severity])


def _point_findings(row: Mapping[str, Any], asked: Requested) -> list[Finding]:
    tag = str(row["tag"])
    ttft, itl = as_number(row["median_ttft_ms"]), as_number(row["median_itl_ms"])
    candidates: list[tuple[CheckName, Severity, str | None]] = [
        ("failed_requests", "error", _failed_message(row, asked)),
        ("near_zero_ttft", "warning", None if ttft is None or ttft >= NEAR_ZERO_TTFT_MS else (
            f"median TTFT {ttft:.3f} ms is near zero: a router that buffers or pre-streams "
            "(e.g. mini-lb) hides the real time to first token")),
        ("near_zero_itl", "warning", None if itl is None or itl >= NEAR_ZERO_ITL_MS else (
            f"median ITL {itl:.3f} ms is near zero: tokens arrive in bursts, so a router or "
            "proxy buffers the stream and ITL/TPOT are not the server's")),
        ("short_outputs", "warning", _short_output_message(row, asked)),
        ("client_limited", "warning", None if row.get("client_limited") is not True else (
            "the load generator was CPU-bound at this point: the client, not the server, "
            "limited throughput (try the Rust client)")),
        ("warm_cache", "warning", point_checks.warm_cache_message(row)),
        ("client_late", "warning", point_checks.client_late_message(row)),
        ("kv_failures", "error", point_checks.kv_failure_message(row)),
        ("metrics_missing", "info", point_checks.metrics_message(row)),
    ]  # fmt: skip
    return [Finding(check, sev, tag, msg) for check, sev, msg in candidates if msg is not None]


def _failed_message(row: Mapping[str, Any], asked: Requested) -> str | None:
    sent = asked.num_prompts or int(row["num_prompts"])
    completed = int(row["completed"])
    if completed >= sent and int(row["failed"]) == 0:
        return None
    failed = max(sent - completed, int(row["failed"]))
    return (
        f"{failed} of {sent} requests failed or did not complete: throughput and latency "
        "cover only the rest; check the server logs"
    )


def expected_output_mean(output_len: float, range_ratio: float) -> tuple[float, float]:
    """Mean and standard deviation of the random dataset's output length per request.

    SGLang draws each length uniformly from the integers ``[max(int(L*r), 1), L]``, so with
    range ratio 0 the mean is about L/2, not L.
    """
    low = max(int(output_len * range_ratio), 1)
    count = output_len - low + 1
    return (low + output_len) / 2, math.sqrt((count * count - 1) / 12)


def _short_output_message(row: Mapping[str, Any], asked: Requested) -> str | None:
    ignore_eos = asked.ignore_eos if asked.ignore_eos is not None else row.get("ignore_eos")
    length = as_number(asked.output_len) or as_number(row["output_len"])
    ratio = as_number(asked.range_ratio)
    ratio = ratio if ratio is not None else as_number(row["range_ratio"])
    completed = int(row["completed"])
    dataset = str(asked.dataset or row.get("dataset") or "")
    # Without ignore-eos a model may stop early by design; only random datasets fix lengths.
    if ignore_eos is not True or not dataset.startswith("random") or not length or not completed:
        return None
    mean, std = expected_output_mean(length, ratio or 0.0)
    actual = int(row["total_output_tokens"]) / completed
    # Three standard errors of the sample mean, plus 2% for retokenisation slack.
    floor = mean - 3 * std / math.sqrt(completed) - 0.02 * mean
    if actual >= floor:
        return None
    return (
        f"mean output {actual:.1f} tokens per request, expected about {mean:.1f} for "
        f"output_len {length:g} and range ratio {ratio or 0:g} with ignore-eos: the server "
        "stopped generating early"
    )


def workload_mismatches(df: pd.DataFrame) -> list[str]:
    """Describe every sweep point where two modes ran different workloads.

    Points are compared where their sweep axes (input/output length, concurrency, request rate)
    are equal; there each pair of modes needs at least one identical workload (dataset, prompt
    count, range ratio, seed, ignore-eos, warmup). Unknown values (None) only match None.

    Returns:
        One line per conflicting pair of modes; empty when the comparison is fair.
    """
    problems: list[str] = []
    by_axes: dict[tuple[Hashable, ...], dict[str, set[tuple[Hashable, ...]]]] = {}
    for row in records(df):
        axes = tuple(_key_value(row[c]) for c in SWEEP_AXES)
        fixed = tuple(_key_value(row[c]) for c in FIXED_WORKLOAD)
        by_axes.setdefault(axes, {}).setdefault(str(row["mode"]), set()).add(fixed)
    for axes, modes in by_axes.items():
        names = sorted(modes)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                if modes[first] & modes[second]:
                    continue
                where = " ".join(f"{k}={_show(v)}" for k, v in zip(SWEEP_AXES, axes, strict=True))
                diff = _describe_difference(min(modes[first], key=str), min(modes[second], key=str))
                problems.append(f"{where}: {first} ({diff[0]}) vs {second} ({diff[1]})")
    return problems


def workload_key(row: Mapping[str, Any]) -> tuple[Hashable, ...]:
    """A hashable key equal for two rows exactly when their workloads are identical."""
    return tuple(_key_value(row[c]) for c in WORKLOAD_KEY)


def _describe_difference(a: tuple[Hashable, ...], b: tuple[Hashable, ...]) -> tuple[str, str]:
    names = [n for n, x, y in zip(FIXED_WORKLOAD, a, b, strict=True) if x != y]
    left = ", ".join(f"{n}={_show(a[FIXED_WORKLOAD.index(n)])}" for n in names)
    right = ", ".join(f"{n}={_show(b[FIXED_WORKLOAD.index(n)])}" for n in names)
    return left, right


def _key_value(value: Any) -> Hashable:
    # NaN never equals itself, so unknowns become None; whole floats compare as ints.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, Hashable) else str(value)


def _show(value: Hashable) -> str:
    return "unknown" if value is None else str(value)
