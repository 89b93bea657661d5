"""The SLO capacity search as pure logic: which request rate to measure next, and the answer.

DistServe's figure of merit: the highest request rate a deployment sustains with at least a given
share of requests meeting every SLO (the client's own per-request ``--goodput`` attainment).
The search brackets, then bisects:

1. Start at BENCH_CAPACITY_START_RATE x the topology's GPUs; double while the rate meets the
   target, halve while it does not, until one rate meets it and one does not.
2. Bisect between the highest rate that met it and the lowest that did not (geometric middle:
   rates span decades), until the bracket is narrower than BENCH_CAPACITY_TOLERANCE of its low
   end, or BENCH_CAPACITY_POINTS rates were measured.

Every measured rate is a normal sweep point kept in the run; the answer is the highest rate that
met the target (None when even the lowest rate tried did not). Rates are rounded to 4
significant digits so they name points stably.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_MIN_RATE = 1e-3


@dataclass(frozen=True)
class Probe:
    """One measured rate and whether it met the target."""

    rate: float
    attainment: float
    ok: bool


@dataclass(frozen=True)
class Answer:
    """What a finished (or exhausted) search found."""

    rate: float | None  # the highest rate that met the target
    attainment: float | None  # its attainment
    above: float | None  # the lowest rate that missed it (None: never missed)
    points: int  # rates measured
    converged: bool  # the bracket closed within the tolerance


def round_rate(rate: float) -> float:
    """A rate with 4 significant digits (names points stably)."""
    return float(f"{max(rate, _MIN_RATE):.4g}")


def next_rate(probes: list[Probe], *, start: float, max_points: int,
              tolerance: float) -> float | None:
    """The next rate to measure, or None when the search is done.

    Args:
        probes: what was measured so far, in order.
        start: the first rate (req/s).
        max_points: the most rates the search measures.
        tolerance: stop when (missed - met) / met is below this.
    """
    if not probes:
        return round_rate(start)
    if len(probes) >= max_points:
        return None
    met = [p.rate for p in probes if p.ok]
    missed = [p.rate for p in probes if not p.ok]
    if not missed:
        return round_rate(max(met) * 2)
    if not met:
        low = min(missed)
        return None if low <= _MIN_RATE else round_rate(low / 2)
    low, high = max(met), min(missed)
    if high <= low or (high - low) / low < tolerance:
        return None
    middle = round_rate(math.sqrt(low * high))
    return None if middle in (low, high) else middle


def answer(probes: list[Probe], tolerance: float) -> Answer:
    """The search's result from its probes."""
    met = [p for p in probes if p.ok]
    missed = [p for p in probes if not p.ok]
    best = max(met, key=lambda p: p.rate) if met else None
    above = min((p.rate for p in missed), default=None)
    converged = (best is not None and above is not None
                 and (above - best.rate) / best.rate < tolerance)  # fmt: skip
    return Answer(best.rate if best else None, best.attainment if best else None, above,
                  len(probes), converged)  # fmt: skip
