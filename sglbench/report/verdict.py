"""The verdict in words: per workload, which topology wins at its GPU budget, by how much, where
the winner changes, and which figure shows it.

The figure of merit, in this order (the first the results allow):

1. SLO capacity (a capacity search ran): the highest Poisson rate per GPU at which the target
   share of requests met every SLO (DistServe's goodput per GPU).
2. Goodput per GPU (the rows carry the client's per-request attainment): the best point's good
   requests/s per GPU along the concurrency sweep.
3. Without SLOs: output tok/s per GPU at a matched p99 ITL (the curves interpolated at the highest
   p99 ITL every topology reached), so that no topology buys throughput with latency.

A difference smaller than the spread of repeats (one standard deviation of each side, added) is
"no measurable difference", not a win. A simulated number says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sglbench.display import compact
from sglbench.record.schema import CapacityRecord
from sglbench.types import parse_mode_name


@dataclass(frozen=True)
class Score:
    """One topology's figure of merit on one workload."""

    series: str
    value: float
    spread: float  # one standard deviation over repeats (0: one measurement)
    detail: str  # where it was reached, for people


@dataclass(frozen=True)
class Verdict:
    """The verdict on one workload."""

    panel: str
    text: str
    figure: str
    winner: str | None  # None: no measurable difference, or nothing to compare


def verdicts(points: pd.DataFrame, capacity: list[CapacityRecord], *,
             attainment: float, slo_text: str, simulated: bool) -> list[Verdict]:
    """One verdict per workload (panel) holding an aggregated and a PD topology."""
    found = []
    for panel, group in points.groupby("panel", sort=False):
        verdict = _panel_verdict(str(panel), group, capacity, attainment, slo_text)
        if verdict is not None:
            prefix = "SIMULATED: " if simulated else ""
            found.append(Verdict(verdict.panel, prefix + verdict.text, verdict.figure,
                                 verdict.winner))  # fmt: skip
    found += _input_length_crossover(found, points)
    return found


def _kind(series: str) -> str | None:
    topology = parse_mode_name(series.split(" ")[0])
    return topology.kind if topology else ("pd" if series.startswith("pd") else None)


def _gpus(group: pd.DataFrame, series: str) -> int:
    return int(group.loc[group["series"] == series, "gpus"].iloc[0])


def _panel_verdict(panel: str, group: pd.DataFrame, capacity: list[CapacityRecord],
                   attainment: float, slo_text: str) -> Verdict | None:
    kinds = {s: _kind(s) for s in dict.fromkeys(group["series"])}
    if {"agg", "pd"} - set(kinds.values()):
        return None
    scores, metric, figure = _scores(group, capacity, attainment, slo_text)
    agg = [s for s in scores if kinds.get(s.series) == "agg"]
    pd_ = [s for s in scores if kinds.get(s.series) == "pd"]
    if not agg or not pd_:
        return Verdict(panel, f"{panel}: not enough points to compare ({metric}).", figure, None)
    best_agg, best_pd = max(agg, key=lambda s: s.value), max(pd_, key=lambda s: s.value)
    budgets = {_gpus(group, s.series) for s in (best_agg, best_pd)}
    at = f"at {budgets.pop()} GPUs" if len(budgets) == 1 else "at unequal GPU budgets"
    text = _compare_text(panel, at, best_agg, best_pd, metric)
    undecided = "no measurable difference" in text or "neither" in text
    winner = None if undecided else (
        best_pd.series if best_pd.value > best_agg.value else best_agg.series)
    crossover = _concurrency_crossover(group, best_agg.series, best_pd.series)
    if crossover:
        text += f" {crossover}"
    return Verdict(panel, f"{text} (figure: {figure})", figure, winner)


def _compare_text(panel: str, at: str, agg: Score, pd_: Score, metric: str) -> str:
    lead, other = (pd_, agg) if pd_.value >= agg.value else (agg, pd_)
    if lead.value <= 0:
        return (f"{panel}: {at}, neither {pd_.series} nor {agg.series} reached any {metric} "
                f"at the points measured ({pd_.series}: {pd_.detail}; {agg.series}: "
                f"{agg.detail}); try lower loads or looser SLOs.")
    if abs(pd_.value - agg.value) <= pd_.spread + agg.spread:
        return (f"{panel}: {at}, no measurable difference: {pd_.series} {pd_.value:.3g} and "
                f"{agg.series} {agg.value:.3g} {metric} differ by less than the spread of "
                f"their repeats (±{pd_.spread + agg.spread:.2g}).")
    if other.value <= 0:
        ratio = "while the other meets none" if other.value == 0 else ""
        return (f"{panel}: {at}, {lead.series} sustains {lead.value:.3g} {metric} "
                f"({lead.detail}), {ratio or 'far ahead'} ({other.series}: {other.detail}).")
    word = "aggregated's" if lead is pd_ else "the best PD split's"
    return (f"{panel}: {at}, {lead.series} sustains {lead.value:.3g} {metric} ({lead.detail}), "
            f"{lead.value / other.value:.2f}x {word} ({other.series}: {other.value:.3g}).")


def _scores(group: pd.DataFrame, capacity: list[CapacityRecord], attainment: float,
            slo_text: str) -> tuple[list[Score], str, str]:
    first = group.iloc[0]
    searched = [c for c in capacity if c.mode in set(group["series"])
                and _same(c.input_len, first["input_len"])
                and _same(c.output_len, first["output_len"])]  # fmt: skip
    if searched:
        scores = [Score(c.mode, (c.rate or 0.0) / c.gpus, 0.0,
                        f"{c.rate:g} req/s on {c.gpus} GPU(s), {c.attainment:.0%} within the SLOs"
                        if c.rate is not None else "no rate tried met the SLOs")
                  for c in searched]  # fmt: skip
        return scores, f"req/s per GPU under the SLOs ({slo_text})", "SLO capacity"
    if group["slo_attainment"].notna().any():
        return (_goodput_scores(group, attainment),
                f"good req/s per GPU ({slo_text})", "Goodput per GPU vs concurrency")
    return _matched_itl_scores(group), "output tok/s per GPU at matched p99 ITL", (
        "Pareto: output tok/s per GPU vs tok/s per user")


def _goodput_scores(group: pd.DataFrame, attainment: float) -> list[Score]:
    scores = []
    for series, rows in group.groupby("series", sort=False):
        good = rows[rows["slo_attainment"] >= attainment]
        if good.empty:
            scores.append(Score(str(series), 0.0, 0.0, "no point met the SLOs"))
            continue
        best = good.sort_values("goodput_per_gpu", ascending=False, kind="stable").iloc[0]
        spread = float(best["request_goodput_std"]) / float(best["gpus"])
        scores.append(Score(str(series), float(best["goodput_per_gpu"]), spread,
                            f"at concurrency {compact(best['concurrency'])}"))  # fmt: skip
    return scores


def _matched_itl_scores(group: pd.DataFrame) -> list[Score]:
    curves = {str(s): rows.sort_values("p99_itl_ms")
              for s, rows in group.groupby("series", sort=False)}  # fmt: skip
    lows = [float(c["p99_itl_ms"].min()) for c in curves.values()]
    highs = [float(c["p99_itl_ms"].max()) for c in curves.values()]
    matched = min(highs)
    if matched < max(lows):  # the curves' ITL ranges do not overlap: compare at their best
        return [Score(s, float(c["output_per_gpu"].max()), 0.0, "no common p99 ITL range; "
                      "best point") for s, c in curves.items()]  # fmt: skip
    scores = []
    for series, curve in curves.items():
        value = float(np.interp(matched, curve["p99_itl_ms"], curve["output_per_gpu"]))
        spread = float(curve["output_throughput_std"].max() / curve["gpus"].iloc[0])
        scores.append(Score(series, value, spread, f"at p99 ITL {matched:.3g} ms"))
    return scores


def _concurrency_crossover(group: pd.DataFrame, agg: str, pd_: str) -> str:
    """Where the winner between two series changes along the concurrency sweep."""
    column = "goodput_per_gpu" if group["slo_attainment"].notna().any() else "output_per_gpu"
    a = group[group["series"] == agg].set_index("concurrency")[column]
    b = group[group["series"] == pd_].set_index("concurrency")[column]
    shared = sorted(set(a.index) & set(b.index))
    leaders = [(c, pd_ if b[c] > a[c] else agg) for c in shared
               if not math.isnan(a[c]) and not math.isnan(b[c])]  # fmt: skip
    for (c0, first), (c1, second) in itertools.pairwise(leaders):
        if first != second:
            return (f"The winner changes from {first} to {second} between concurrency "
                    f"{compact(c0)} and {compact(c1)} ({column.replace('_', ' ')}).")
    return ""


def _input_length_crossover(found: list[Verdict], points: pd.DataFrame) -> list[Verdict]:
    """Across workloads that differ only in input length: where the winner's kind changes."""
    by_panel = {v.panel: v for v in found if v.winner is not None}
    first = points.drop_duplicates("panel").set_index("panel")
    rest = ("output_len", "num_prompts", "request_rate", "dataset", "range_ratio")
    families: dict[tuple[str, ...], list[tuple[float, str]]] = {}
    for panel in by_panel:
        row = first.loc[panel]
        if not pd.isna(row["input_len"]):
            key = tuple(str(row[c]) for c in rest)
            families.setdefault(key, []).append((float(row["input_len"]), panel))
    out = []
    for members in families.values():
        ordered = sorted(members)
        for (l0, p0), (l1, p1) in itertools.pairwise(ordered):
            k0, k1 = _kind(str(by_panel[p0].winner)), _kind(str(by_panel[p1].winner))
            if k0 != k1:
                out.append(Verdict("input length", f"The winner changes from {k0} to {k1} "
                                   f"between input length {l0:g} and {l1:g} ({p0} vs {p1}).",
                                   "Throughput", None))  # fmt: skip
                break
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False
