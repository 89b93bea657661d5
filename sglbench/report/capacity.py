"""Report sections for the verdict, the SLO capacity searches and the GPU budget."""

from __future__ import annotations

import pandas as pd

from sglbench.display import number
from sglbench.record.schema import CapacityRecord
from sglbench.report.render import Section, TableData
from sglbench.report.verdict import Verdict

_SLO_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "e2el": "E2E"}


def slo_description(df: pd.DataFrame, slo_ttft_ms: float | None, slo_itl_ms: float | None,
                    attainment: float) -> str:
    """The SLOs in words, e.g. ``TTFT ≤ 500 ms, TPOT ≤ 20 ms for 90% of requests``.

    From the targets the client checked (its rows), else from the settings given to the report.
    """
    given = df["goodput_slos"].dropna()
    if not given.empty:
        parts = [p.replace("<=", " ≤ ").replace("ms", " ms") for p in str(given.iloc[0]).split()]
        named = [f"{_SLO_NAMES.get(p.split(' ')[0], p.split(' ')[0])}{p[p.index(' '):]}"
                 for p in parts]  # fmt: skip
        return (f"{', '.join(named)} for {attainment:.0%} of requests; an ITL target is checked "
                "on each request's TPOT")
    parts = [f"TTFT ≤ {slo_ttft_ms:g} ms" if slo_ttft_ms else "",
             f"ITL ≤ {slo_itl_ms:g} ms (p99)" if slo_itl_ms else ""]  # fmt: skip
    return ", ".join(p for p in parts if p) or "no SLO"


def unequal_budget_detail(points: pd.DataFrame) -> str | None:
    """``agg 1, pd 2 GPUs`` when the series hold different GPU counts, else None."""
    gpus = points.drop_duplicates("series")[["series", "gpus"]]
    if gpus["gpus"].nunique() <= 1:
        return None
    return ", ".join(f"{s} {g}" for s, g in gpus.itertuples(index=False)) + " GPUs"


def verdict_section(found: list[Verdict]) -> Section:
    """The verdict at the top of the report."""
    section = Section("Verdict")
    if not found:
        section.paragraphs.append("No workload was measured with both an aggregated and a PD "
                                  "topology, so there is nothing to judge.")
    section.paragraphs += [v.text for v in found]
    return section


def capacity_section(points: pd.DataFrame, capacity: list[CapacityRecord],
                     slo_text: str) -> Section:
    """Each topology's highest rate under the SLOs, and the points its search measured."""
    section = Section("SLO capacity")
    if not capacity:
        section.paragraphs.append("No capacity search ran (BENCH_CAPACITY_SEARCH=false).")
        return section
    section.paragraphs.append(
        f"Per topology, the highest Poisson request rate at which the target share of requests "
        f"met every SLO ({slo_text}): a bracket, then bisection; every rate tried is a point "
        "of the run (no concurrency cap: a cap would queue requests in the client, unseen)."
    )
    section.tables.append(TableData(
        ["topology", "GPUs", "in / out", "capacity req/s", "req/s/GPU", "attainment",
         "first rate missed", "points", "converged"],
        [[c.mode, str(c.gpus), f"{c.input_len} / {c.output_len}", number(c.rate, 2),
          number((c.rate or 0) / c.gpus, 2) if c.rate else "-", number(c.attainment, 2),
          number(c.above, 2), str(c.points), "yes" if c.converged else "no"]
         for c in capacity],
    ))  # fmt: skip
    if not points.empty:
        section.tables.append(TableData(
            ["topology", "rate req/s", "attainment", "good req/s/GPU", "TTFT p99 ms",
             "ITL p99 ms"],
            [[str(r["series"]), number(r["request_rate"], 3), number(r["slo_attainment"], 2),
              number(r["goodput_per_gpu"], 2), number(r["p99_ttft_ms"]),
              number(r["p99_itl_ms"])] for r in points.to_dict("records")],
        ))  # fmt: skip
    return section
