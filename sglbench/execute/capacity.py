"""The SLO capacity search of one topology, measured point by point (see ``plan.capacity``).

One search per (input length, output length) of the sweep. Its points run through the same
bench client and end up in the mode's JSONL like any sweep point (tagged ``..._r<rate>_cap``),
without a concurrency cap (a cap would queue requests in the client, where TTFT does not see
them). A resumed run rebuilds each search from the rows already in the file and goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sglbench.execute.bench import PointResult
from sglbench.plan.capacity import Answer, Probe, answer, next_rate
from sglbench.plan.sweep import SweepPoint, point_tag, sweep_points
from sglbench.record import jsonl
from sglbench.record.schema import CapacityRecord
from sglbench.settings import Settings
from sglbench.types import Topology

Measure = Callable[[SweepPoint], PointResult]


def workloads(settings: Settings) -> list[tuple[int, int]]:
    """The (input length, output length) pairs a search runs for, in sweep order."""
    return list(dict.fromkeys((p.input_len, p.output_len) for p in sweep_points(settings)))


def search_point(settings: Settings, workload: tuple[int, int], rate: float) -> SweepPoint:
    """The sweep point of one search rate: no concurrency cap (the prompt count)."""
    return SweepPoint(workload[0], workload[1], settings.bench_num_prompts, rate, capacity=True)


def probes_in_file(settings: Settings, mode: Topology, workload: tuple[int, int],
                   out: Path) -> list[Probe]:
    """The search rates already measured for ``workload`` (rows of this mode's file)."""
    rows = {str(r.get("tag")): r for _, r in jsonl.read_rows(out, strict=False)}
    found = []
    for _, row in sorted((r.get("request_rate"), r) for r in rows.values()
                         if _is_probe_of(r, settings, mode, workload)):  # fmt: skip
        found.append(probe_of(settings, row))
    return found


def _is_probe_of(row: dict[str, object], settings: Settings, mode: Topology,
                 workload: tuple[int, int]) -> bool:
    rate = row.get("request_rate")
    if not isinstance(rate, int | float):
        return False
    point = search_point(settings, workload, float(rate))
    return row.get("tag") == point_tag(mode.name, point)


def probe_of(settings: Settings, row: dict[str, object] | None) -> Probe:
    """A probe from the client's row: its attainment against BENCH_SLO_ATTAINMENT."""
    row = row or {}
    rate = row.get("request_rate")
    value = row.get("slo_attainment")
    attainment = float(value) if isinstance(value, int | float) else 0.0
    complete = row.get("completed") == settings.bench_num_prompts
    return Probe(float(rate) if isinstance(rate, int | float) else 0.0, attainment,
                 complete and attainment >= settings.bench_slo_attainment)  # fmt: skip


def pending(settings: Settings, mode: Topology, out: Path) -> list[tuple[int, int]]:
    """The workloads whose search still has rates to measure (none without the setting)."""
    if not settings.bench_capacity_search:
        return []
    return [w for w in workloads(settings)
            if _next(settings, mode, probes_in_file(settings, mode, w, out)) is not None]


def _next(settings: Settings, mode: Topology, probes: list[Probe]) -> float | None:
    return next_rate(probes, start=settings.bench_capacity_start_rate * mode.gpus,
                     max_points=settings.bench_capacity_points,
                     tolerance=settings.bench_capacity_tolerance)  # fmt: skip


def run_search(settings: Settings, mode: Topology, workload: tuple[int, int], out: Path,
               measure: Measure) -> Answer:
    """Measure rates until the search is done; return its answer."""
    probes = probes_in_file(settings, mode, workload, out)
    while (rate := _next(settings, mode, probes)) is not None:
        result = measure(search_point(settings, workload, rate))
        probe = probe_of(settings, result.row if result.ok else None)
        probes.append(Probe(rate, probe.attainment, probe.ok))
    return answer(probes, settings.bench_capacity_tolerance)


def records(settings: Settings, mode: Topology, out: Path,
            slos: dict[str, float]) -> Sequence[CapacityRecord]:
    """The answer of every finished (or exhausted) search of ``mode``, from its file."""
    found = []
    for workload in workloads(settings):
        probes = probes_in_file(settings, mode, workload, out)
        if not probes:
            continue
        result = answer(probes, settings.bench_capacity_tolerance)
        found.append(CapacityRecord(
            mode=mode.name, gpus=mode.gpus, input_len=workload[0], output_len=workload[1],
            rate=result.rate, attainment=result.attainment, above=result.above,
            points=result.points, converged=result.converged, slos_ms=slos,
            target_attainment=settings.bench_slo_attainment,
            done=_next(settings, mode, probes) is None))  # fmt: skip
    return found
