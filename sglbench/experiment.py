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
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from rich.console import Console

from sglbench import lifecycle
from sglbench.bench import (
    PointResult,
    client_argv,
    failure_message,
    results_table,
    run_points,
    shell_line,
    start_worker,
)
from sglbench.benchworker import BenchWorker, PointOutcome
from sglbench.client_setup import ClientSetup, client_setup, planned_client
from sglbench.errors import BenchError, ConfigError
from sglbench.metadata import (
    new_metadata,
    now,
    server_infos,
    set_point,
    setup,
    workload,
    workload_diff,
    write_metadata,
)
from sglbench.results import read_metadata
from sglbench.settings import Settings
from sglbench.specs import Mode, SweepPoint, router_spec, server_specs, sweep_points
from sglbench.target import Target

PointHook = Callable[[PointResult], None]
# The outcome of a point whose row was found in the file but never recorded (a Ctrl-C came
# between the client's write and ours): it finished, its CPU figures are unknown.
_ADOPTED = PointOutcome(ok=True, error=None, cpu_s=0.0, measured_s=0.0, phase="unrecorded",
                        seconds=0.0)


@dataclass(frozen=True)
class RunMode:
    """One mode of a run: its name in files and tags, what lifecycle starts, GPUs it holds."""

    name: str  # agg, pd, pd_2p1d
    kind: Mode
    gpus: int


def run_modes(settings: Settings, modes: Sequence[str]) -> list[RunMode]:
    """The modes to run, named as in the run directory (``pd_<x>p<y>d`` beyond 1P1D).

    Raises:
        ConfigError: an unknown or repeated mode.
    """
    known = get_args(Mode)
    planned: list[RunMode] = []
    for mode in modes:
        if mode not in known or any(p.kind == mode for p in planned):
            raise ConfigError(f"--modes: {mode!r} is unknown or repeated; expected agg, pd or "
                              "agg,pd")
        if mode == "agg":
            planned.append(RunMode("agg", "agg", 1))
            continue
        p, d = settings.num_prefill, settings.num_decode
        name = "pd" if (p, d) == (1, 1) else f"pd_{p}p{d}d"
        planned.append(RunMode(name, "pd", p + d))
    return planned


def point_tag(mode: RunMode, point: SweepPoint) -> str:
    """The tag of a point's row: ``<mode>_<label>``, e.g. ``pd_in512_out128_c64_rinf``."""
    return f"{mode.name}_{point.label}"


def repair_jsonl(path: Path) -> bool:
    """Drop a last line cut short by a kill (no newline), so appended rows stay parseable."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    path.write_bytes(data[: data.rfind(b"\n") + 1])
    return True


def done_tags(path: Path) -> set[str]:
    """Tags that already have a result row in ``path`` (unparseable lines ignored)."""
    if not path.exists():
        return set()
    tags = set()
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("tag"), str):
                tags.add(row["tag"])
    return tags


def pending_points(mode: RunMode, points: Sequence[SweepPoint],
                   done: set[str]) -> list[SweepPoint]:
    """Points of ``mode`` still to measure, in sweep order."""
    return [p for p in points if point_tag(mode, p) not in done]


def point_record(mode: RunMode, result: PointResult, *, num_prompts: int,
                 run_dir: Path) -> dict[str, Any]:
    """The ``points`` entry of the metadata for one point (``result.started`` None: a row
    adopted from the file, whose client figures were never recorded).
    """
    p, o = result.point, result.outcome
    measured = result.started is not None
    record = {
        "tag": result.tag, "mode": mode.name, "label": p.label,
        "input_len": p.input_len, "output_len": p.output_len,
        "max_concurrency": p.max_concurrency, "request_rate": p.request_rate,
        "num_prompts": num_prompts, "status": "ok" if result.ok else "failed",
        "error": None if result.ok else (o.error or "no result row"),
        "client_cpu_cores": round(o.cores, 3) if measured else None,
        "client_cpu_phase": o.phase if measured else None,
        "client_limited": result.client_limited if measured else None,
        "client_seconds": round(o.seconds, 2) if measured else None,
        "host_cpu_busy": round(o.host_busy, 3) if measured else None,
        "started": result.started, "ended": now() if measured else None,
        "log": str(result.log.relative_to(run_dir)) if result.log.is_relative_to(run_dir)
        else str(result.log),
    }  # fmt: skip
    if not measured:
        record["note"] = "row written just before an interrupt; client CPU not recorded"
    return record


def _new_run_dir(settings: Settings) -> tuple[str, Path]:
    base = lifecycle.new_run_id()
    for n in range(1, 100):
        run_id = base if n == 1 else f"{base}-{n}"
        run_dir = Path(settings.results_dir) / run_id
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir(parents=True)
            return run_id, run_dir
    raise ConfigError(f"RESULTS_DIR={settings.results_dir}: too many runs named {base}-*")


def open_run(settings: Settings, plan: list[RunMode], resume: str | None,
             force: bool) -> tuple[Path, dict[str, Any]]:
    """The run directory and its metadata: a new run, or the one to resume.

    Raises:
        ConfigError: no such run, or its workload or setup (``metadata.setup``) differs and
            ``force`` is false.
    """
    gpus = {m.name: m.gpus for m in plan}
    if not resume:
        run_id, run_dir = _new_run_dir(settings)
        meta = new_metadata(settings, run_id=run_id, modes=[m.name for m in plan],
                            gpus_per_mode=gpus)
        return run_dir, meta
    run_dir = Path(settings.results_dir) / resume
    if not (run_dir / "metadata.json").is_file():
        raise ConfigError(f"--resume {resume}: no run {run_dir} (with metadata.json); give a "
                          f"run id from {settings.results_dir}/")
    meta = read_metadata(run_dir)
    diff = workload_diff(meta.get("workload") or {}, workload(settings))
    # A run from before the setup fingerprint has none to compare: it gets the current one.
    diff += workload_diff(meta.setdefault("setup", setup(settings)), setup(settings))
    if diff and not force:
        raise ConfigError(f"--resume {resume}: the workload differs from the run's "
                          f"({'; '.join(diff)}); use the run's settings, start a new "
                          "run, or pass --force to mix them (the report will say so)")
    if diff:
        meta["forced_mismatch"] = True
        meta.setdefault("workload_changes", []).append({"at": now(), "changes": diff})
    meta["resumed"] = [*meta.get("resumed", []), now()]
    meta["interrupted"] = False
    meta["modes"] = list(dict.fromkeys([*meta.get("modes", []), *(m.name for m in plan)]))
    meta["gpus_per_mode"] = {**meta.get("gpus_per_mode", {}), **gpus}
    return run_dir, meta


class _Run:
    """State of one ``compare`` call: the run directory, its metadata, the client worker."""

    def __init__(self, settings: Settings, run_dir: Path, meta: dict[str, Any],
                 client: ClientSetup, console: Console, on_point: PointHook | None) -> None:
        self.settings, self.run_dir, self.meta = settings, run_dir, meta
        self.client, self.console, self.on_point = client, console, on_point
        self.worker: BenchWorker | None = None
        self.results: list[PointResult] = []
        self.failures: list[str] = []

    def save(self) -> None:
        write_metadata(self.run_dir, self.meta, self.settings)

    def run_mode(self, mode: RunMode, points: list[SweepPoint]) -> None:
        out = self.run_dir / f"{mode.name}.jsonl"
        if repair_jsonl(out):
            self.console.print(f"[yellow]{out}: dropped a half-written last line[/yellow]")
        done = done_tags(out)
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
            base_url = lifecycle.up_mode(self.settings, mode.kind, run_id=self.meta["run_id"],
                                         console=self.console)
            self.meta["servers"].update(server_infos(self.settings, mode.kind))
            self.save()
            with self.console.status("loading SGLang's bench client ..."):
                self.worker.wait_ready()
            self._measure(mode, Target(base_url, mode.kind == "pd", mode.name), todo, out)
        finally:
            # Only what this run started: servers of other runs (other ports) keep running.
            lifecycle.down(self.settings, self.console, run_id=self.meta["run_id"])

    def _adopt_rows(self, mode: RunMode, points: list[SweepPoint], done: set[str]) -> None:
        """Record points whose row was written just before a Ctrl-C, so none goes missing."""
        recorded = {p.get("tag") for p in self.meta["points"] if p.get("status") == "ok"}
        for point in points:
            tag = point_tag(mode, point)
            if tag in done and tag not in recorded:
                result = PointResult(point, tag, _ADOPTED, {"tag": tag}, False,
                                     self.run_dir / "logs" / f"{tag}.log")
                set_point(self.meta, point_record(
                    mode, result, num_prompts=self.settings.bench_num_prompts,
                    run_dir=self.run_dir))

    def _measure(self, mode: RunMode, target: Target, todo: list[SweepPoint],
                 out: Path) -> None:
        assert self.worker is not None
        run_points(self.worker, self.settings, self.client, target=target, points=todo,
                   tag_of=lambda p: point_tag(mode, p), output_file=out,
                   logs=self.run_dir / "logs", console=self.console, title=mode.name,
                   on_result=lambda r: self._record(mode, r))

    def _record(self, mode: RunMode, result: PointResult) -> bool:
        """Keep the point (metadata saved at once); True: a compare goes on after a failure."""
        self.results.append(result)
        set_point(self.meta, point_record(
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
        self.meta["ended"] = now()
        self.meta["interrupted"] = interrupted
        self.save()


def describe_compare(settings: Settings, modes: Sequence[str], resume: str | None = None,
                     force: bool = False) -> list[str]:
    """What ``compare`` would run (``--dry-run``): each mode's servers, then its client lines.

    With ``resume``, only the points the run still lacks (a mode with none left starts no
    server); the run must exist and match the workload unless ``force``. Nothing is written.

    A dataset or tokenizer problem that would stop the real run is a ``# warning:`` line.

    Raises:
        ConfigError: bad modes, unknown run, workload mismatch.
    """
    plan = run_modes(settings, modes)
    client, lines = planned_client(settings)
    run_dir = (open_run(settings, plan, resume, force)[0] if resume
               else Path(settings.results_dir) / "<run-id>")
    for mode in plan:
        out = run_dir / f"{mode.name}.jsonl"
        todo = pending_points(mode, sweep_points(settings), done_tags(out))
        if not todo:
            lines.append(f"# {mode.name}: every point is already measured in {out}")
            continue
        lines += lifecycle.describe_mode(settings, mode.kind)
        url = (server_specs(settings, "agg")[0].url if mode.kind == "agg"
               else router_spec(settings).url)
        target = Target(url, mode.kind == "pd", mode.name)
        for point in todo:
            argv = client_argv(settings, client, target=target, tag=point_tag(mode, point),
                               output_file=out, point=point)
            lines.append(f"# bench {point_tag(mode, point)}\n{shell_line(client, argv)}")
    return lines


def compare(settings: Settings, *, modes: Sequence[str], resume: str | None = None,
            force: bool = False, console: Console | None = None,
            on_point: PointHook | None = None, table: bool = True) -> Path:
    """Run every mode over the same sweep and write ``RESULTS_DIR/<run-id>/``.

    Args:
        settings: the run's settings; BENCH_* lists make the sweep.
        modes: ``agg`` and/or ``pd``, in order (``pd`` runs xPyD with NUM_PREFILL/NUM_DECODE).
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
    plan = run_modes(settings, modes)
    client = client_setup(settings)  # a dataset or tokenizer problem stops us before any start
    run_dir, meta = open_run(settings, plan, resume, force)
    run = _Run(settings, run_dir, meta, client, console, on_point)
    run.save()
    console.print(f"run {meta['run_id']} -> {run_dir}")
    points = sweep_points(settings)
    interrupted = True
    try:
        for mode in plan:
            run.run_mode(mode, points)
        interrupted = False
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: finished points are kept in {run_dir}; continue "
                      f"with: invoke compare --resume {meta['run_id']}[/yellow]")
        raise
    finally:
        run.close(interrupted)
    if not run.results:
        console.print(f"every point of run {meta['run_id']} is already measured")
    elif table:
        console.print(results_table(run.results, f"run {meta['run_id']}",
                                    settings.bench_num_prompts))
    if run.failures:
        raise BenchError(f"{len(run.failures)} point(s) failed (rerun them with --resume "
                         f"{meta['run_id']}); first: {run.failures[0]}")
    return run_dir
