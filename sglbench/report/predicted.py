"""Predicted beside measured: where ``invoke predict`` and a measured run cover the same topology
and workload, the report shows both and the error, so the prediction's reach is visible."""

from __future__ import annotations

import math

import pandas as pd

from sglbench.display import number
from sglbench.report.render import Section, TableData
from sglbench.results.load import records

PREDICTED_TEXT = (
    "PREDICTED: some series come from `invoke predict`: the simulator on a virtual clock, with "
    "a profile, nothing served. They rank what to measure next; they are not measurements."
)
_COMPARED = {"output_throughput": "out tok/s", "mean_ttft_ms": "mean TTFT ms",
             "mean_itl_ms": "mean ITL ms"}  # fmt: skip
_KEY = ("mode", "input_len", "output_len", "concurrency")


def predicted_section(points: pd.DataFrame) -> Section | None:
    """The table of predicted vs measured points (None when no pair exists)."""
    predicted = points[points["predicted"].astype(bool)]
    measured = points[~points["predicted"].astype(bool)]
    if predicted.empty or measured.empty:
        return None
    rows = []
    for guess in records(predicted):
        for real in records(measured):
            if all(_same(guess[k], real[k]) for k in _KEY):
                cells = [f"{number(real[m])} / {number(guess[m])} ({_error(guess[m], real[m])})"
                         for m in _COMPARED]  # fmt: skip
                rows.append([str(real["mode"]), str(real["panel"]),
                             number(real["concurrency"], 0), *cells])  # fmt: skip
    if not rows:
        return None
    return Section("Predicted beside measured", paragraphs=[
        "Each cell: measured / predicted (the prediction's error). Where the errors are small, "
        "trust the prediction's ranking of the topologies not measured; where they are large, "
        "calibrate the profile on these runs first (`invoke calibrate --path RUN`)."],
        tables=[TableData(["topology", "workload", "conc", *_COMPARED.values()], rows)])


def _error(guess: object, real: object) -> str:
    try:
        g, r = float(guess), float(real)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return "-" if not r or math.isnan(g) or math.isnan(r) else f"{(g - r) / r:+.0%}"


def _same(a: object, b: object) -> bool:
    return str(a) == str(b)
