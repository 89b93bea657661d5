"""Plain-text tables of what calibrate and predict found (what their CLIs print)."""

from __future__ import annotations

import math
from typing import Any

from sglbench.sim.points import METRICS

# calibrate's Calibration and PointResult, typed loosely here: calibrate's CLI imports this
# module, so importing calibrate back (even for types) would make an import circle.
Calibration = Any
PointResult = Any

_LABELS = {
    "output_throughput": "out tok/s",
    "mean_itl_ms": "mean ITL ms",
    "mean_ttft_ms": "mean TTFT ms",
}


def _pct(x: float) -> str:
    return "     -" if math.isnan(x) else f"{x:+6.1f}"


def _cells(r: PointResult) -> str:
    cells = []
    for m in METRICS:
        meas, fit = r.point.measured[m], r.fitted[m]
        cells.append(f"{meas:9.1f} {fit:9.1f} {_pct(r.error(m, False))} {_pct(r.error(m, True))}")
    return " | ".join(cells)


def calibration_table(cal: Calibration) -> str:
    """Every point measured vs fitted, the fit and leave-one-out errors, medians, worst rows."""
    head = " | ".join(f"{_LABELS[m]:^33}" for m in METRICS)
    sub = " | ".join(f"{'meas':>9} {'fit':>9} {'fit%':>6} {'loo%':>6}" for _ in METRICS)
    lines = [f"{'point':40} {'family':8} {head}", f"{'':40} {'':8} {sub}"]
    for r in cal.results:
        lines.append(f"{r.point.tag[:40]:40} {r.point.family:8} {_cells(r)}")
    has_loo = any(r.loo is not None for r in cal.results)
    for loo in (False, True) if has_loo else (False,):
        kind = "leave-one-out" if loo else "fit"
        for family, med in cal.medians(loo).items():
            text = ", ".join(f"{_LABELS[m]} {v:.1f}%" for m, v in med.items())
            lines.append(f"median |{kind} error| {family}: {text}")
    if has_loo:
        for family in cal.medians(True):
            w = cal.worst(family, True)
            errs = ", ".join(f"{_LABELS[m]} {_pct(w.error(m, True)).strip()}%" for m in METRICS)
            lines.append(f"worst leave-one-out row {family}: {w.point.tag} ({errs})")
    return "\n".join(lines)


def prediction_table(summary: dict[str, Any]) -> str:
    """The ranking of a prediction: one line per topology, best first."""
    slo = summary.get("slo") or {}
    lines = [
        f"predicted (simulated, profile {summary['profile']}), {summary['gpus']} GPUs,"
        f" ranked by {summary['ranked_by']}" + (f"; SLO {slo}" if slo else ""),
        f"{'rank':>4} {'topology':10} {'gpus':>4} {'score':>10} {'req/s/GPU':>10}"
        f" {'tok/s/GPU':>10} {'p99 ITL ms':>10} {'mean TTFT ms':>12}",
    ]
    for i, t in enumerate(summary["ranking"], 1):
        lines.append(
            f"{i:>4} {t['topology']:10} {t['gpus']:>4} {t['score']:>10.3f}"
            f" {t['request_rate_per_gpu']:>10.3f} {t['output_tok_s_per_gpu']:>10.1f}"
            f" {t['p99_itl_ms']:>10.2f} {t['mean_ttft_ms']:>12.1f}"
        )
    return "\n".join(lines)
