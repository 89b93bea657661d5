"""A compare run's directory and record: a new run or the one to resume, and point records.

``RESULTS_DIR/<run-id>/`` holds ``<mode>.jsonl`` per topology and ``metadata.json`` (the
``RunRecord``). Resume checks that the workload and the setup are the run's own (unless forced,
which the record says), and that the run id names a run directory inside RESULTS_DIR.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sglbench.errors import ConfigError
from sglbench.execute import deploy
from sglbench.execute.bench import PointResult
from sglbench.execute.provenance import new_record
from sglbench.plan.sweep import SweepPoint, point_tag, setup_of, workload_of
from sglbench.plan.topology import unequal_budget
from sglbench.record.accounting import per_gpu
from sglbench.record.schema import (
    ModeRecord,
    PointRecord,
    RunRecord,
    Workload,
    WorkloadChange,
    now,
    setup_diff,
)
from sglbench.settings import Settings
from sglbench.types import Topology

# A run id names a directory of RESULTS_DIR: no path separators, no "..".
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def pending_points(mode: Topology, points: Sequence[SweepPoint],
                   done: set[str]) -> list[SweepPoint]:
    """Points of ``mode`` still to measure, in sweep order."""
    return [p for p in points if point_tag(mode.name, p) not in done]


def point_record(mode: Topology, result: PointResult, *, num_prompts: int,
                 run_dir: Path) -> PointRecord:
    """The record of one point (``result.started`` None: a row adopted from the file, whose
    client figures were never recorded).
    """
    p, o = result.point, result.outcome
    measured = result.started is not None
    log = result.log.relative_to(run_dir) if result.log.is_relative_to(run_dir) else result.log
    return PointRecord(
        tag=result.tag, mode=mode.name, label=p.label,
        input_len=p.input_len, output_len=p.output_len,
        max_concurrency=p.max_concurrency, request_rate=p.request_rate,
        num_prompts=num_prompts, status="ok" if result.ok else "failed",
        error=None if result.ok else (o.error or result.incomplete or "no result row"),
        client_cpu_cores=round(o.cores, 3) if measured else None,
        client_cpu_phase=o.phase if measured else None,
        client_limited=result.client_limited if measured else None,
        client_seconds=round(o.seconds, 2) if measured else None,
        host_cpu_busy=round(o.host_busy, 3) if measured else None,
        started=result.started, ended=now() if measured else None, log=str(log),
        note=None if measured else "row written just before an interrupt; client CPU not "
        "recorded", observed=result.observed,
        gpus=mode.gpus, slo_attainment=_attainment(result.row),
        capacity_search=result.point.capacity,
        **(per_gpu(result.row, mode) if result.ok and result.row else {}),
    )  # fmt: skip


def _attainment(row: dict[str, Any] | None) -> float | None:
    value = (row or {}).get("slo_attainment")
    return float(value) if isinstance(value, int | float) else None


def _new_run_dir(settings: Settings) -> tuple[str, Path]:
    base = deploy.new_run_id()
    for n in range(1, 100):
        run_id = base if n == 1 else f"{base}-{n}"
        run_dir = Path(settings.results_dir) / run_id
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir(parents=True)
            return run_id, run_dir
    raise ConfigError(f"RESULTS_DIR={settings.results_dir}: too many runs named {base}-*")


def open_run(settings: Settings, plan: Sequence[Topology], resume: str | None,
             force: bool) -> tuple[Path, RunRecord]:
    """The run directory and its record: a new run, or the one to resume.

    Raises:
        ConfigError: no such run, or its workload or setup differs and ``force`` is false.
    """
    modes = [ModeRecord.of(t) for t in plan]
    if not resume:
        run_id, run_dir = _new_run_dir(settings)
        fresh = new_record(settings, run_id=run_id, modes=modes)
        fresh.unequal_budget = unequal_budget(plan)
        return run_dir, fresh
    if not _RUN_ID.match(resume) or ".." in resume:
        raise ConfigError(f"--resume {resume}: expected a run id (a directory name in "
                          f"{settings.results_dir}/), not a path")
    run_dir = Path(settings.results_dir) / resume
    record = RunRecord.load(run_dir)
    if record is None:
        raise ConfigError(f"--resume {resume}: no run {run_dir} (with metadata.json); give a "
                          f"run id from {settings.results_dir}/")
    setup = setup_of(settings)
    diff = (record.workload or Workload()).diff(workload_of(settings))
    # A run from before the setup fingerprint has none to compare: it gets the current one.
    diff += setup_diff(record.setup, setup)
    if diff and not force:
        raise ConfigError(f"--resume {resume}: the workload differs from the run's "
                          f"({'; '.join(diff)}); use the run's settings, start a new "
                          "run, or pass --force to mix them (the report will say so)")
    if diff:
        record.forced_mismatch = True
        record.workload_changes.append(WorkloadChange(at=now(), changes=diff))
    record.setup = record.setup or setup
    record.resumed.append(now())
    record.interrupted = False
    record.add_modes(modes)
    record.unequal_budget = unequal_budget([m.topology for m in record.modes])
    return run_dir, record
