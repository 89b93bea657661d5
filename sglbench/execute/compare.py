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

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from sglbench.errors import BenchError, ConfigError, ServerError
from sglbench.execute import capacity, deploy
from sglbench.execute.bench import (
    PointResult,
    client_argv,
    failure_message,
    results_table,
    run_point,
    run_points,
    shell_line,
    start_worker,
)
from sglbench.execute.client_worker import BenchWorker, PointOutcome
from sglbench.execute.liveness import ServerDied, check_alive
from sglbench.execute.preflight import check_run
from sglbench.execute.provenance import secrets_of, server_infos
from sglbench.execute.rundir import open_run, pending_points, point_record
from sglbench.execute.runs import acquire, release
from sglbench.execute.target import Target
from sglbench.plan.bench import goodput_args, slo_targets
from sglbench.plan.client import ClientSetup, client_setup, planned_client
from sglbench.plan.observe import observed_endpoints
from sglbench.plan.router import router_spec
from sglbench.plan.servers import server_specs
from sglbench.plan.sweep import SweepPoint, point_tag, sweep_points
from sglbench.plan.topology import run_topologies, unequal_budget
from sglbench.record import jsonl
from sglbench.record.schema import (
    PointRecord,
    RunRecord,
    now,
)
from sglbench.settings import Settings
from sglbench.types import Topology

PointHook = Callable[[PointResult], None]
# The outcome of a point whose row was found in the file but never recorded (a Ctrl-C came
# between the client's write and ours): it finished, its CPU figures are unknown.
_ADOPTED = PointOutcome(ok=True, error=None, cpu_s=0.0, measured_s=0.0, phase="unrecorded",
                        seconds=0.0)


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

    def check_client_args(self, plan: list[Topology]) -> None:
        """BENCH_EXTRA_ARGS through the client's own parser, before any server starts.

        Only when there are extra args (the harness's own flags are known good): the client
        worker, which the run needs anyway, is started and its import awaited for it.
        """
        if not self.settings.bench_extra_args or not plan:
            return
        self.worker = start_worker(self.settings, self.client,
                                   self.run_dir / "logs" / "client-worker.log")
        with self.console.status("checking BENCH_EXTRA_ARGS with SGLang's bench client ..."):
            point = sweep_points(self.settings)[0]
            argv = client_argv(self.settings, self.client, output_file=self.run_dir / "x.jsonl",
                               target=Target(mode_url(self.settings, plan[0]), False, "check"),
                               tag="check", point=point)  # fmt: skip
            error = self.worker.check(argv)
        if error:
            raise ConfigError(f"BENCH_EXTRA_ARGS={self.settings.bench_extra_args!r}: SGLang's "
                              f"bench client rejects it ({error}); fix or remove it")

    def abandon(self, *, new: bool) -> None:
        """Stop the client worker; a new run that never measured leaves no directory behind."""
        if self.worker is not None:
            self.worker.close()
        if new:
            shutil.rmtree(self.run_dir, ignore_errors=True)

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
        searches = capacity.pending(self.settings, mode, out)
        if not todo and not searches:
            self._keep_capacity(mode, out)
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
            if todo:
                self._measure(mode, target, todo, out)
            for workload in searches:
                self._search(mode, target, workload, out)
        except ServerDied as died:
            self._not_measured(mode, points, out, str(died))
        finally:
            self._keep_capacity(mode, out)
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
                   on_result=lambda r: self._record(mode, r),
                   before=lambda tag: check_alive(self.settings, mode, tag))

    def _not_measured(self, mode: Topology, points: list[SweepPoint], out: Path,
                      why: str) -> None:
        """A server died: the mode ends; its points without a row are kept as not measured."""
        done = jsonl.tags(out)
        for point in pending_points(mode, points, done):
            tag = point_tag(mode.name, point)
            self.record.set_point(PointRecord(
                tag=tag, mode=mode.name, label=point.label, input_len=point.input_len,
                output_len=point.output_len, max_concurrency=point.max_concurrency,
                request_rate=point.request_rate, num_prompts=self.settings.bench_num_prompts,
                status="not_measured", error=why.split("\n", 1)[0], gpus=mode.gpus))
        self.save()
        hint = (f"{mode.name} ended, its other points not measured (resume with: invoke "
                f"compare --resume {self.record.run_id})")
        self.failures.append(f"{why.split(chr(10), 1)[0]}; {hint}")
        self.console.print(f"{why}\n{hint}", style="red", markup=False, highlight=False)

    def _search(self, mode: Topology, target: Target, workload: tuple[int, int],
                out: Path) -> None:
        """One SLO capacity search: a point at a time, each kept like a sweep point."""
        assert self.worker is not None
        worker = self.worker

        def measure(point: SweepPoint) -> PointResult:
            tag = point_tag(mode.name, point)
            check_alive(self.settings, mode, tag)
            self.console.print(f"{mode.name}: capacity search, {point.request_rate:g} req/s")
            result = run_point(worker, self.settings, self.client, target=target, point=point,
                               tag=tag, output_file=out, log=self.run_dir / "logs" / f"{tag}.log")
            self._record(mode, result)
            return result

        found = capacity.run_search(self.settings, mode, workload, out, measure)
        shown = f"{found.rate:g} req/s" if found.rate is not None else "none of the rates tried"
        self.console.print(f"{mode.name}: capacity under the SLOs, in {workload[0]} / out "
                           f"{workload[1]}: {shown} after {found.points} point(s)")

    def _keep_capacity(self, mode: Topology, out: Path) -> None:
        """The record's capacity answers of ``mode``, from its file (also after a resume)."""
        if not self.settings.bench_capacity_search:
            return
        answers = capacity.records(self.settings, mode, out, slo_targets(self.settings))
        self.record.capacity = [c for c in self.record.capacity if c.mode != mode.name]
        self.record.capacity += answers
        self.save()

    def _record(self, mode: Topology, result: PointResult) -> bool:
        """Keep the point (record saved at once); True: a compare goes on after a failure.

        A row whose requests failed is set aside in ``<mode>.failed.jsonl``: kept, but never
        read as a result, and a resume measures the point again.
        """
        if result.incomplete:
            out = self.run_dir / f"{mode.name}.jsonl"
            jsonl.set_aside(out, result.tag, self.run_dir / f"{mode.name}.failed.jsonl")
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
        for workload in capacity.pending(settings, mode, out):
            lines.append(f"## {mode.name}: capacity search in {workload[0]} / out "
                         f"{workload[1]}: Poisson rates from "
                         f"{settings.bench_capacity_start_rate * mode.gpus:g} req/s, at most "
                         f"{settings.bench_capacity_points} points, no concurrency cap, "
                         f"{' '.join(goodput_args(settings))}")
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
    check_run(settings, plan, run_id=resume or "")  # ports, other runs, paths, router args
    client = client_setup(settings)  # a dataset or tokenizer problem stops us before any start
    run_dir, record = open_run(settings, plan, resume, force)
    try:
        acquire(settings, record.run_id, "invoke compare", plan)
    except ServerError:
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)  # new and still empty
        raise
    run = _Run(settings, run_dir, record, client, console, on_point)
    run_id = record.run_id
    try:
        run.check_client_args(plan)
    except BaseException:
        run.abandon(new=not resume)
        release(settings, run_id)
        raise
    run.save()
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
        release(settings, run_id)
    if not run.results:
        console.print(f"every point of run {run_id} is already measured")
    elif table:
        console.print(results_table(run.results, f"run {run_id}",
                                    settings.bench_num_prompts))
    if run.failures:
        raise BenchError(f"{len(run.failures)} point(s) failed (rerun them with --resume "
                         f"{run_id}); first: {run.failures[0]}")
    return run_dir
