"""``invoke compare``: every mode over the same sweep, one server start per mode, teardown always.

A run lives in ``RESULTS_DIR/<run-id>/``: ``<mode>.jsonl`` per mode (agg, pd, or pd_<x>p<y>d
with several prefill or decode workers), rows tagged ``<mode>_<point label>``, and
``metadata.json``. All points of all modes go through one bench client process, so the client's
import (~10 s) is paid once per run, and it overlaps with the first server start.

Resume: ``compare --resume RUN`` skips every point whose tag already has a row in its mode's
file, and refuses when the workload differs from the run's (unless forced, which the metadata
records as ``forced_mismatch``). Rows are appended by the client as each point ends, so a Ctrl-C
keeps every finished point; what the run started is stopped either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from sglbench.errors import BenchError, ConfigError
from sglbench.execute import deploy
from sglbench.execute.bench import (
    PointResult,
    client_argv,
    failure_message,
    results_table,
    run_points,
    shell_line,
    start_worker,
)
from sglbench.execute.client_worker import BenchWorker, PointOutcome
from sglbench.execute.provenance import new_record, secrets_of, server_infos
from sglbench.execute.target import Target
from sglbench.plan.client import ClientSetup, client_setup, planned_client
from sglbench.plan.observe import observed_endpoints
from sglbench.plan.router import router_spec
from sglbench.plan.servers import server_specs
from sglbench.plan.sweep import SweepPoint, point_tag, setup_of, sweep_points, workload_of
from sglbench.plan.topology import run_topologies, unequal_budget
from sglbench.record import jsonl
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

PointHook = Callable[[PointResult], None]
# The outcome of a point whose row was found in the file but never recorded (a Ctrl-C came
# between the client's write and ours): it finished, its CPU figures are unknown.
_ADOPTED = PointOutcome(ok=True, error=None, cpu_s=0.0, measured_s=0.0, phase="unrecorded",
                        seconds=0.0)


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
        error=None if result.ok else (o.error or "no result row"),
        client_cpu_cores=round(o.cores, 3) if measured else None,
        client_cpu_phase=o.phase if measured else None,
        client_limited=result.client_limited if measured else None,
        client_seconds=round(o.seconds, 2) if measured else None,
        host_cpu_busy=round(o.host_busy, 3) if measured else None,
        started=result.started, ended=now() if measured else None, log=str(log),
        note=None if measured else "row written just before an interrupt; client CPU not "
        "recorded", observed=result.observed,
    )  # fmt: skip


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


class _Run:
    """State of one ``compare`` call: the run directory, its record, the client worker."""

    def __init__(self, settings: Settings, run_dir: Path, record: RunRecord,
                 client: ClientSetup, console: Console, on_point: PointHook | None) -> None:
        self.settings, self.run_dir, self.record = settings, run_dir, record
        self.client, self.console, self.on_point = client, console, on_point
        self.worker: BenchWorker | None = None
        self.results: list[PointResult] = []
        self.failures: list[str] = []

    def save(self) -> None:
        self.record.save(self.run_dir, secrets_of(self.settings))

    def run_mode(self, mode: Topology, points: list[SweepPoint]) -> None:
        out = self.run_dir / f"{mode.name}.jsonl"
        if jsonl.repair(out):
            self.console.print(f"[yellow]{out}: dropped a half-written last line[/yellow]")
        done = jsonl.tags(out)
        self._adopt_rows(mode, points, done)
        todo = pending_points(mode, points, done)
        if len(todo) < len(points):
            self.console.print(f"{mode.name}: {len(points) - len(todo)} point(s) already "
                               "measured, skipped")
        if not todo:
            return
        if self.worker is None:  # importing the client overlaps with the server start
            self.worker = start_worker(self.settings, self.client,
                                       self.run_dir / "logs" / "client-worker.log")
        try:
            base_url = deploy.up_mode(self.settings, mode, run_id=self.record.run_id,
                                      console=self.console)
            self.record.servers.update(server_infos(self.settings, mode))
            self.save()
            with self.console.status("loading SGLang's bench client ..."):
                self.worker.wait_ready()
            target = Target(base_url, mode.kind == "pd", mode.name,
                            observed_endpoints(self.settings, mode))  # flush/scrape: issue 11
            self._measure(mode, target, todo, out)
        finally:
            # Only what this run started: servers of other runs (other ports) keep running.
            deploy.down(self.settings, self.console, run_id=self.record.run_id)

    def _adopt_rows(self, mode: Topology, points: list[SweepPoint], done: set[str]) -> None:
        """Record points whose row was written just before a Ctrl-C, so none goes missing."""
        recorded = {p.tag for p in self.record.points if p.status == "ok"}
        for point in points:
            tag = point_tag(mode.name, point)
            if tag in done and tag not in recorded:
                result = PointResult(point, tag, _ADOPTED, {"tag": tag}, False,
                                     self.run_dir / "logs" / f"{tag}.log")
                self.record.set_point(point_record(
                    mode, result, num_prompts=self.settings.bench_num_prompts,
                    run_dir=self.run_dir))

    def _measure(self, mode: Topology, target: Target, todo: list[SweepPoint],
                 out: Path) -> None:
        assert self.worker is not None
        run_points(self.worker, self.settings, self.client, target=target, points=todo,
                   tag_of=lambda p: point_tag(mode.name, p), output_file=out,
                   logs=self.run_dir / "logs", console=self.console, title=mode.name,
                   on_result=lambda r: self._record(mode, r))

    def _record(self, mode: Topology, result: PointResult) -> bool:
        """Keep the point (record saved at once); True: a compare goes on after a failure."""
        self.results.append(result)
        self.record.set_point(point_record(
            mode, result, num_prompts=self.settings.bench_num_prompts, run_dir=self.run_dir))
        self.save()
        if not result.ok:
            message = failure_message(result, self.client)
            self.failures.append(message)
            self.console.print(f"[red]{message}[/red]")
        if self.on_point is not None:
            self.on_point(result)
        return True

    def close(self, interrupted: bool) -> None:
        if self.worker is not None:
            self.worker.close()
        self.record.ended = now()
        self.record.interrupted = interrupted
        self.save()


def mode_url(settings: Settings, mode: Topology) -> str:
    """Where the bench client sends a mode's load: its router, or its one agg server."""
    if mode.routed:
        return router_spec(settings, mode).url
    return server_specs(settings, "agg", mode)[0].url


def describe_compare(settings: Settings, modes: Sequence[str] = (), resume: str | None = None,
                     force: bool = False, *, topologies: Sequence[str] = (),
                     gpus: int | None = None) -> list[str]:
    """What ``compare`` would run (``--dry-run``): each mode's servers, then its client lines.

    With ``resume``, only the points the run still lacks (a mode with none left starts no
    server); the run must exist and match the workload unless ``force``. Nothing is written.

    A dataset or tokenizer problem that would stop the real run is a ``# warning:`` line.

    Raises:
        ConfigError: bad modes, unknown run, workload mismatch.
    """
    plan = run_topologies(settings, modes=modes, topologies=topologies, gpus=gpus)
    client, lines = planned_client(settings)
    budget = unequal_budget(plan)
    if budget:
        lines.append(f"## note: {budget}")
    run_dir = (open_run(settings, plan, resume, force)[0] if resume
               else Path(settings.results_dir) / "<run-id>")
    for mode in plan:
        out = run_dir / f"{mode.name}.jsonl"
        todo = pending_points(mode, sweep_points(settings), jsonl.tags(out))
        if not todo:
            lines.append(f"# {mode.name}: every point is already measured in {out}")
            continue
        lines.append(f"## {mode.name}: {mode.label}, {mode.gpus} GPU(s)")
        lines += deploy.describe_mode(settings, mode)
        target = Target(mode_url(settings, mode), mode.kind == "pd", mode.name)
        for point in todo:
            tag = point_tag(mode.name, point)
            argv = client_argv(settings, client, target=target, tag=tag, output_file=out,
                               point=point)
            lines.append(f"# bench {tag}\n{shell_line(client, argv)}")
    return lines


def compare(settings: Settings, *, modes: Sequence[str] = (), topologies: Sequence[str] = (),
            gpus: int | None = None, resume: str | None = None,
            force: bool = False, console: Console | None = None,
            on_point: PointHook | None = None, table: bool = True) -> Path:
    """Run every topology over the same sweep and write ``RESULTS_DIR/<run-id>/``.

    Args:
        settings: the run's settings; BENCH_* lists make the sweep.
        modes: ``agg`` and/or ``pd``, in order (NUM_* workers, *_TP each), when neither
            ``topologies`` nor a GPU budget is given (``plan.topology.run_topologies``).
        topologies: ``aggx2``, ``1p3d``, ``2p2d@tp2``, ... (overrides COMPARE_TOPOLOGIES).
        gpus: a GPU budget: agg xN and every PD split of N (overrides COMPARE_GPUS).
        resume: a run id to continue; its measured points are skipped.
        force: resume even when the workload differs (recorded as ``forced_mismatch``).
        console: where progress, server messages and the table go.
        on_point: called after each measured point (tests use it to interrupt a run).
        table: print the table of the points measured now at the end (``invoke demo`` prints
            the summary of the whole run instead).

    Returns:
        The run directory.

    Raises:
        ConfigError: bad modes, unknown run, workload mismatch, dataset needing the hub.
        ServerError: a server or the router did not come up (it is stopped again).
        BenchError: some points failed (the others are kept); the first one's reason.
    """
    console = console or Console()
    plan = run_topologies(settings, modes=modes, topologies=topologies, gpus=gpus)
    client = client_setup(settings)  # a dataset or tokenizer problem stops us before any start
    run_dir, record = open_run(settings, plan, resume, force)
    run = _Run(settings, run_dir, record, client, console, on_point)
    run.save()
    run_id = record.run_id
    console.print(f"run {run_id} -> {run_dir}: "
                  + ", ".join(f"{t.label} ({t.gpus} GPU)" for t in plan))
    if record.unequal_budget:
        console.print(f"[yellow]note: {record.unequal_budget}[/yellow]")
    points = sweep_points(settings)
    interrupted = True
    try:
        for mode in plan:
            run.run_mode(mode, points)
        interrupted = False
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: finished points are kept in {run_dir}; continue "
                      f"with: invoke compare --resume {run_id}[/yellow]")
        raise
    finally:
        run.close(interrupted)
    if not run.results:
        console.print(f"every point of run {run_id} is already measured")
    elif table:
        console.print(results_table(run.results, f"run {run_id}",
                                    settings.bench_num_prompts))
    if run.failures:
        raise BenchError(f"{len(run.failures)} point(s) failed (rerun them with --resume "
                         f"{run_id}); first: {run.failures[0]}")
    return run_dir
