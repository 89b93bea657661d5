"""Derived views of loaded results: sweep points, PD/agg ratios, Pareto front, goodput.

Everything here is pure pandas on the frame ``sglbench.results.load_results`` returns; plots and
report rendering only read what these functions produce.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from typing import Any

import pandas as pd

from sglbench.display import compact
from sglbench.results.checks import WORKLOAD_KEY, workload_key
from sglbench.results.load import records

# A figure panel holds the points whose workload differs only in concurrency.
PANEL_KEY = tuple(c for c in WORKLOAD_KEY if c != "max_concurrency")
METRICS = (
    "output_throughput", "total_throughput", "request_throughput", "input_throughput",
    "request_goodput", "slo_attainment",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "median_itl_ms",
    "p99_itl_ms", "mean_tpot_ms", "mean_e2e_ms", "p99_e2e_ms", "total_input_tokens",
    "total_output_tokens", "completed", "failed",
)  # fmt: skip
RATIO_METRICS = {
    "output_throughput": "out tok/s",
    "output_per_gpu": "out tok/s/GPU",
    "median_ttft_ms": "TTFT p50",
    "p99_ttft_ms": "TTFT p99",
    "median_itl_ms": "ITL p50",
    "mean_e2e_ms": "E2E mean",
}


# Metrics whose spread over repeats the report shows (and the verdict weighs).
SPREAD_METRICS = ("output_throughput", "total_throughput", "request_goodput", "p99_itl_ms",
                  "p99_ttft_ms")  # fmt: skip


def measured_points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per series (mode, or mode and run when a mode comes from several runs) and workload.

    Repeated measurements of the same point are averaged (``repeats`` counts them; ``<metric>_std``
    is their standard deviation, 0 for one measurement). Capacity-search points are left out
    (``capacity_points`` has them). Adds ``series``, ``panel`` (a label of the workload without
    concurrency), ``concurrency`` (the concurrency cap, or the prompt count when there was none),
    ``output_per_gpu`` (output tok/s per GPU of the whole topology: what an equal budget
    compares), the per-role accounting (``output_per_decode_gpu``, ``input_per_prefill_gpu``;
    agg counts every GPU for both; ``total_per_gpu``), ``goodput_per_gpu`` (the client's good
    requests/s per GPU) and ``tokens_per_user`` (1000 / mean TPOT, or mean ITL without TPOT).
    """
    frame = df[~df["capacity_search"].astype(bool)].copy()
    if frame.empty:
        frame = df.iloc[0:0].copy()
    runs_per_mode = frame.groupby("mode")["run_id"].nunique(dropna=False)
    frame["series"] = [
        f"{m} ({r})" if runs_per_mode[m] > 1 and pd.notna(r) else str(m)
        for m, r in zip(frame["mode"], frame["run_id"], strict=True)
    ]
    frame["wkey"] = pd.Series(
        [workload_key(r) for r in records(frame)], index=frame.index, dtype=object
    )
    grouped = frame.groupby(["series", "wkey"], sort=False)
    points = grouped.first()
    points[list(METRICS)] = grouped[list(METRICS)].mean()
    for metric in SPREAD_METRICS:
        points[f"{metric}_std"] = grouped[metric].std(ddof=1).fillna(0.0)
    points["repeats"] = grouped.size()
    points["simulated"] = grouped["simulated"].any()
    points["predicted"] = grouped["predicted"].any()
    points["tags"] = grouped["tag"].agg(lambda s: ", ".join(sorted(set(map(str, s)))))
    points = points.reset_index()
    points["concurrency"] = points["max_concurrency"].fillna(points["num_prompts"])
    points["panel"] = [panel_label(r) for r in records(points)]
    add_accounting(points)
    per_token = points["mean_tpot_ms"].where(points["mean_tpot_ms"] > 0, points["mean_itl_ms"])
    points["tokens_per_user"] = 1000.0 / per_token.where(per_token > 0)
    order = ["panel", "series", "concurrency"]
    return points.sort_values(order, key=_natural).reset_index(drop=True)


def add_accounting(points: pd.DataFrame) -> None:
    """Per-role accounting columns (see ``measured_points``), in place."""
    points["output_per_gpu"] = points["output_throughput"] / points["gpus"]  # the budget view
    points["output_per_decode_gpu"] = points["output_throughput"] / points["decode_gpus"]
    points["input_per_prefill_gpu"] = points["input_throughput"] / points["prefill_gpus"]
    points["total_per_gpu"] = points["total_throughput"] / points["gpus"]
    points["goodput_per_gpu"] = points["request_goodput"] / points["gpus"]


def capacity_points(df: pd.DataFrame) -> pd.DataFrame:
    """The points of SLO capacity searches, one row each, with ``series`` and accounting."""
    frame = df[df["capacity_search"].astype(bool)].copy()
    frame["series"] = frame["mode"].astype(str)
    add_accounting(frame)
    return frame.sort_values(["series", "request_rate"]).reset_index(drop=True)


def panel_label(row: dict[str, Any]) -> str:
    """Short title of a workload without its concurrency, e.g. ``in 512 / out 128, n=100``."""
    parts = []
    if compact(row["input_len"]) != "?" or compact(row["output_len"]) != "?":
        parts.append(f"in {compact(row['input_len'])} / out {compact(row['output_len'])}")
    parts.append(f"n={compact(row['num_prompts'])}")
    rate = row["request_rate"]
    if isinstance(rate, float) and math.isfinite(rate):
        parts.append(f"rate {rate:g}/s")
    dataset = row.get("dataset")
    if dataset and not str(dataset).startswith("random"):
        parts.append(str(dataset))
    ratio = row.get("range_ratio")
    if isinstance(ratio, float) and ratio > 0:
        parts.append(f"range {ratio:g}")
    if isinstance(row.get("workload_variant"), str):  # shared prefix, burstiness ... (issue 11)
        parts.append(str(row["workload_variant"]))
    return ", ".join(parts)


def ratio_table(points: pd.DataFrame, baseline: str = "agg") -> pd.DataFrame:
    """PD/agg ratios at points whose workload is identical (same dataset, lengths, seed, ...).

    Returns:
        One row per (panel, concurrency, series) with a ``<metric>`` ratio column per entry of
        ``RATIO_METRICS`` and ``same_draws`` (True when both sent the same input token total,
        i.e. the same prompts).
    """
    base = points[points["mode"] == baseline]
    others = points[points["mode"] != baseline]
    rows: list[dict[str, Any]] = []
    for _, other in others.iterrows():
        for _, ref in base[base["wkey"] == other["wkey"]].iterrows():
            row: dict[str, Any] = {
                "panel": other["panel"],
                "concurrency": other["concurrency"],
                "series": other["series"],
                "baseline": ref["series"],
                "same_draws": ref["total_input_tokens"] == other["total_input_tokens"],
            }
            for metric in RATIO_METRICS:
                row[metric] = _ratio(other[metric], ref[metric])
            rows.append(row)
    columns = ["panel", "concurrency", "series", "baseline", *RATIO_METRICS, "same_draws"]
    return pd.DataFrame(rows, columns=columns)


def pareto_front(points: pd.DataFrame) -> pd.Series:
    """Mark points no other point of the same panel beats on both tok/s per user and per GPU."""
    rows = records(points)
    flags = [_on_front(r, [o for o in rows if o["panel"] == r["panel"]]) for r in rows]
    return pd.Series(flags, index=points.index, dtype=bool)


def _on_front(row: dict[str, Any], panel: list[dict[str, Any]]) -> bool:
    user, gpu = float(row["tokens_per_user"]), float(row["output_per_gpu"])
    if math.isnan(user) or math.isnan(gpu):
        return False
    for other in panel:
        o_user, o_gpu = float(other["tokens_per_user"]), float(other["output_per_gpu"])
        if o_user >= user and o_gpu >= gpu and (o_user > user or o_gpu > gpu):
            return False
    return True


def per_request_goodput(points: pd.DataFrame) -> bool:
    """True when the rows carry the client's per-request attainment (``--goodput``)."""
    return bool(points["slo_attainment"].notna().any())


def goodput(points: pd.DataFrame, slo_ttft_ms: float | None, slo_itl_ms: float | None,
            attainment: float = 0.9) -> pd.Series:
    """Good requests/s per GPU at points that meet the SLOs, 0 at points that do not.

    With the client's per-request attainment in the rows: a point meets the SLOs when at least
    ``attainment`` of its requests met every target, and its goodput is the client's
    ``request_goodput`` (requests/s that met them) per GPU. Rows without it (older runs, no
    ``--goodput``): a point meets the SLOs when its p99 TTFT and p99 ITL are within them, and its
    goodput is then its request throughput per GPU.
    """
    if per_request_goodput(points):
        meets = points["slo_attainment"] >= attainment
        return points["goodput_per_gpu"].where(meets, 0.0).fillna(0.0)
    meets = pd.Series(True, index=points.index)
    if slo_ttft_ms is not None:
        meets &= points["p99_ttft_ms"] <= slo_ttft_ms
    if slo_itl_ms is not None:
        meets &= points["p99_itl_ms"] <= slo_itl_ms
    return (points["request_throughput"] / points["gpus"]).where(meets, 0.0)


def best_goodput(
    points: pd.DataFrame, slo_ttft_ms: float | None, slo_itl_ms: float | None,
    attainment: float = 0.9,
) -> pd.DataFrame:
    """Per panel and series: the highest goodput per GPU and the concurrency that reached it."""
    frame = points.assign(goodput_per_gpu=goodput(points, slo_ttft_ms, slo_itl_ms, attainment))
    rows: list[dict[str, Any]] = []
    for (panel, series), group in frame.groupby(["panel", "series"], sort=False):
        best = group.sort_values("goodput_per_gpu", ascending=False, kind="stable").iloc[0]
        met = best["goodput_per_gpu"] > 0
        rows.append({
            "panel": panel,
            "series": series,
            "concurrency": best["concurrency"] if met else math.nan,
            "goodput_per_gpu": best["goodput_per_gpu"],
            "points_meeting": int((group["goodput_per_gpu"] > 0).sum()),
            "points": len(group),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _ratio(value: Any, ref: Any) -> float:
    try:
        return float(value) / float(ref) if float(ref) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _natural(column: pd.Series) -> pd.Series:
    # Sort labels like "in 128" before "in 2048", and pd_1p2d before pd_1p10d.
    if column.dtype.kind in "fi":
        return column
    return column.map(_natural_key)


def _natural_key(value: Hashable) -> tuple[Any, ...]:
    parts = re.split(r"(\d+)", str(value))
    return tuple(int(p) if p.isdigit() else p for p in parts)
