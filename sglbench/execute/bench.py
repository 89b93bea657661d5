"""Run SGLang's bench client (``sglang.benchmark.serving``) against agg or the PD router.

Target and PD detection: ``sglbench.execute.target``. Offline rules (dataset, tokenizer,
HF_HUB_OFFLINE): ``sglbench.plan.client``. The long-lived client process:
``sglbench.execute.client_worker``.

A single point writes rows tagged ``TAG``; with BENCH_* lists (a sweep) each point is tagged
``TAG_<point label>``, all in ``RESULTS_DIR/TAG.jsonl``, through one client process.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sglbench.display import number
from sglbench.errors import BenchError
from sglbench.execute.client_worker import TAIL_LINES, BenchWorker, PointOutcome
from sglbench.execute.logs import tail
from sglbench.execute.observe import PointObserver
from sglbench.execute.target import Target, detect_target, planned_target
from sglbench.plan.bench import BENCH_MODULE, bench_args
from sglbench.plan.client import ClientSetup, client_setup, planned_client
from sglbench.plan.observe import observed_endpoints, worker_endpoints
from sglbench.plan.sweep import SweepPoint, bench_tag, check_tag, sweep_points
from sglbench.record import jsonl
from sglbench.record.metrics import metrics_file_for
from sglbench.record.observation import Observation
from sglbench.record.schema import now
from sglbench.settings import Settings
from sglbench.types import BenchMode

# A load generator using this share of its CPU budget was likely the bottleneck itself.
CLIENT_LIMIT_SHARE = 0.9
# Above this share of all cores busy, the host itself (client and, on the simulator, servers)
# was saturated: numbers may be limited by the machine running the load generator.
HOST_SATURATED_SHARE = 0.95
_HUB_FAILURE = re.compile(
    r"huggingface\.co|OfflineModeIsEnabled|LocalEntryNotFound|HFValidationError|"
    r"Repo id must|We couldn't connect|Can't load tokenizer|MaxRetryError|Failed to resolve"
)


@dataclass(frozen=True)
class PointResult:
    """One measured sweep point."""

    point: SweepPoint
    tag: str
    outcome: PointOutcome
    row: dict[str, Any] | None
    client_limited: bool
    log: Path
    started: str | None = None  # ISO time the point began (None: not measured by this call)
    sent: int | None = None  # requests the client was asked to send
    observed: Observation | None = None  # cache flush, lateness, metrics scrape (issue 11)

    @property
    def ok(self) -> bool:
        """True when the client finished and wrote its row, and every request completed."""
        return self.outcome.ok and self.row is not None and self.incomplete is None

    @property
    def incomplete(self) -> str | None:
        """``"3 of 40 requests failed"`` when the row holds failures, else None."""
        if self.row is None:
            return None
        done, errors = self.row.get("completed"), self.row.get("errors")
        failed = sum(1 for e in errors if e) if isinstance(errors, list) else None
        if failed is None and self.sent is not None and isinstance(done, int):
            failed = self.sent - done
        return f"{failed} of {self.sent or '?'} requests failed" if failed else None


def client_argv(settings: Settings, client: ClientSetup, *, target: Target, tag: str,
                output_file: Path, point: SweepPoint) -> list[str]:
    """The client's flags for one point: ``specs.bench_args`` plus the tokenizer flag."""
    args = bench_args(settings, base_url=target.base_url, tag=tag, output_file=output_file,
                      pd=target.pd, point=point)
    return [*args, *client.extra_args]


def shell_line(client: ClientSetup, argv: list[str]) -> str:
    """The equivalent command line (``--dry-run``), secrets never included."""
    return client.shown_env() + shlex.join(["python", "-m", BENCH_MODULE, *argv])


# ---- running points ---------------------------------------------------------------------------

def client_home(log: Path) -> dict[str, str]:
    """A fresh private HOME for the client worker (beside its log), HF cache kept.

    The client caches generated-shared-prefix prompts in ``~/.cache/sglang/benchmark`` under a
    key without the tokenizer's path or ``--gsp-fast-prepare``, so another model's (or a fast,
    untokenized) cache would be loaded silently; a HOME of its own per run avoids that.
    """
    from huggingface_hub import constants

    home = log.parent / "client-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return {"HOME": str(home), "HF_HOME": os.environ.get("HF_HOME", constants.HF_HOME)}


def start_worker(settings: Settings, client: ClientSetup, log: Path) -> BenchWorker:
    """A started (still importing) client worker with the client's environment."""
    # The client runs with this process's environment (PATH, HF_HOME, proxies) plus ours.
    worker = BenchWorker(log=log, env={**os.environ, **client_home(log), **client.env})
    worker.start()
    return worker


def client_limited(cores: float, settings: Settings) -> bool:
    """True when the client used nearly all the CPU it can (one core for the Python client)."""
    budget = float(os.cpu_count() or 1) if settings.bench_rust_client else 1.0
    return cores >= CLIENT_LIMIT_SHARE * budget


def run_point(worker: BenchWorker, settings: Settings, client: ClientSetup, *, target: Target,
              point: SweepPoint, tag: str, output_file: Path, log: Path) -> PointResult:
    """Measure one point; the client appends its row to ``output_file``."""
    started = now()
    output_file.parent.mkdir(parents=True, exist_ok=True)
    offset = jsonl.size(output_file)
    argv = client_argv(settings, client, target=target, tag=tag, output_file=output_file,
                       point=point)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(shell_line(client, argv) + "\n")
    observer = PointObserver(settings, target, tag=tag, mode=target.what,
                             metrics_file=metrics_file_for(output_file))
    observer.start()
    try:
        outcome = worker.run(argv, log=log, arrivals=arrivals_of(settings),
                             hooks=None if settings.bench_rust_client else observer)
    except BenchError as exc:  # the worker died (it restarts for the next point)
        outcome = PointOutcome(ok=False, error=str(exc), cpu_s=0.0, measured_s=0.0,
                               phase="whole", seconds=0.0)
    observed = observer.finish(outcome.lateness) if observer.active or outcome.lateness else None
    rows = [r for _, r in jsonl.read_rows(output_file, strict=False, offset=offset)
            if r.get("tag") == tag]
    row = rows[-1] if rows else None
    limited = row is not None and client_limited(outcome.cores, settings)
    return PointResult(point, tag, outcome, row, limited, log, started,
                       settings.bench_num_prompts, observed)


def arrivals_of(settings: Settings) -> dict[str, float] | None:
    """Our bursty schedule for the client worker, when BENCH_BURSTINESS asks for one."""
    if settings.bench_burstiness == 1.0:
        return None
    return {"burstiness": settings.bench_burstiness, "seed": float(settings.bench_seed)}


def with_endpoints(settings: Settings, target: Target) -> Target:
    """The detected target plus the workers behind it (from the settings), for flush/scrape.

    The router: NUM_PREFILL/NUM_DECODE workers when PD (NUM_AGG replicas otherwise); the agg
    server: that one server; a given URL: nothing known (flushed through the URL itself).
    """
    if target.what == "router":
        topology = settings.topology("pd" if target.pd else "agg")
        return replace(target, endpoints=observed_endpoints(settings, topology))
    if target.what == "agg server":
        agg = worker_endpoints(settings, settings.topology("agg"))[:1]
        return replace(target, endpoints=tuple(agg))
    return target


def failure_message(result: PointResult, client: ClientSetup) -> str:
    """One line saying why a point failed and what to do, plus the client's last lines."""
    last = tail(result.log, TAIL_LINES)
    if not client.tokenizer_local and _HUB_FAILURE.search(last):
        return (f"the bench client could not load the tokenizer {client.tokenizer!r} from the HF "
                "hub (not cached here, hub unreachable?); set TOKENIZER_PATH to a local "
                "tokenizer directory")
    if result.outcome.ok and result.incomplete:
        return (f"point {result.tag}: {result.incomplete} (the row is kept aside in "
                f"{result.tag.split('_in')[0]}.failed.jsonl; a resume measures the point "
                f"again); full output in {result.log}")
    why = result.outcome.error or "the client wrote no result row"
    if result.outcome.error and result.outcome.error in last:
        return f"point {result.tag}: {why}; full output in {result.log}"  # its last line said it
    return f"point {result.tag}: {why}; full output in {result.log}; last lines:\n{last}"


def results_table(results: list[PointResult], title: str, num_prompts: int) -> Table:
    """A rich table of measured points; ``limit``: client-bound, ``full``: host saturated."""
    table = Table(title=title)
    table.add_column("tag", no_wrap=True)
    for name in ("done", "out tok/s", "TTFT ms", "ITL ms", "E2E ms", "client CPU", "host CPU"):
        table.add_column(name, justify="right")
    for r in results:
        row = r.row or {}
        cpu = f"{r.outcome.cores:.0%}" + (" [red]limit[/red]" if r.client_limited else "")
        busy = r.outcome.host_busy
        host = f"{busy:.0%}" + (" [yellow]full[/yellow]" if busy >= HOST_SATURATED_SHARE else "")
        if not r.ok:  # the CPU of a failed call measures its setup, not a load
            cpu = host = "-"
        done = f"{row.get('completed', 0)}/{num_prompts}" if r.ok else "[red]failed[/red]"
        table.add_row(r.tag, done, number(row.get("output_throughput")),
                      number(row.get("mean_ttft_ms")), number(row.get("mean_itl_ms")),
                      number(row.get("mean_e2e_latency_ms")), cpu, host)
    return table


def run_bench(settings: Settings, *, tag: str, base_url: str | None = None,
              mode: BenchMode = "auto", dry_run: bool = False,
              console: Console | None = None) -> Path:
    """Benchmark the running deployment; append rows to ``RESULTS_DIR/<tag>.jsonl``.

    Args:
        settings: the run's settings (BENCH_* workload; lists make a sweep).
        tag: names the results file and the rows (``TAG_<label>`` per point in a sweep).
        base_url: what to benchmark; None: the router if it answers, else the agg server.
        mode: ``pd`` (the router, ``--pd-separated``), ``agg``, or ``auto``: detect it.
        dry_run: print the client command lines, run nothing (``describe_bench``).
        console: where progress and the result table go.

    Returns:
        The results file.

    Raises:
        ConfigError: bad tag, or the client would need the HF hub.
        BenchError: nothing answers, or the client failed (with its last output lines).
    """
    console = console or Console()
    check_tag(tag)
    output_file = Path(settings.results_dir) / f"{tag}.jsonl"
    points = sweep_points(settings)
    single = len(points) == 1
    if dry_run:
        for line in describe_bench(settings, tag=tag, base_url=base_url, mode=mode,
                                   output_file=output_file):
            console.print(line, soft_wrap=True, highlight=False, markup=False)
        return output_file
    client = client_setup(settings)
    logs = Path(settings.run_dir) / "bench"
    # The client's import (about 10 s) starts first; finding the target overlaps with it.
    worker = start_worker(settings, client, logs / "client-worker.log")
    try:
        target = with_endpoints(settings, detect_target(settings, base_url, mode))
        console.print(f"benchmarking the {target.what} at {target.base_url} "
                      f"({'PD' if target.pd else 'aggregated'}), {len(points)} point(s) -> "
                      f"{output_file}")  # fmt: skip
        with console.status("loading SGLang's bench client ..."):
            worker.wait_ready()
        # A single bench stops at the first failure, as the scripts did.
        results = run_points(worker, settings, client, target=target, points=points,
                             tag_of=lambda p: bench_tag(tag, p, single), output_file=output_file,
                             logs=logs, console=console, title=tag, on_result=lambda r: r.ok)
    finally:
        # Idle after the last point, the worker exits at end of input; the table and this
        # process's own exit need not wait for that.
        worker.close(wait=False)
    console.print(results_table(results, f"results -> {output_file}",
                                settings.bench_num_prompts))
    failed = [r for r in results if not r.ok]
    if failed:
        raise BenchError(failure_message(failed[0], client))
    return output_file


def describe_bench(settings: Settings, *, tag: str, base_url: str | None, mode: BenchMode,
                   output_file: Path) -> list[str]:
    """What ``run_bench`` would run (``--dry-run``): never fails and never probes a server.

    A dataset or tokenizer problem becomes a ``# warning:`` line; without ``--mode`` or a base
    URL the agg command is shown, with a comment on the router that detection would prefer.
    """
    client, lines = planned_client(settings)
    target, notes = planned_target(settings, base_url, mode)
    points = sweep_points(settings)
    lines += notes
    for point in points:
        argv = client_argv(settings, client, target=target, output_file=output_file,
                           tag=bench_tag(tag, point, len(points) == 1), point=point)
        lines.append(shell_line(client, argv))
    return lines


def run_points(worker: BenchWorker, settings: Settings, client: ClientSetup, *, target: Target,
               points: Sequence[SweepPoint], tag_of: Callable[[SweepPoint], str],
               output_file: Path, logs: Path, console: Console, title: str,
               on_result: Callable[[PointResult], bool],
               before: Callable[[str], None] | None = None) -> list[PointResult]:
    """Measure ``points`` in order through ``worker`` (left running), with a progress bar.

    The one loop of ``bench`` and ``compare``: each point's row goes to ``output_file`` tagged
    ``tag_of(point)``, its client output to ``logs/<tag>.log``; ``title`` names the bar.
    ``before`` (compare: are the servers alive?) runs before each point with its tag and may
    raise to end the loop; ``on_result`` sees each result; returning False stops the loop there.

    Returns:
        The results of the points measured, in order.
    """
    results: list[PointResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(title, total=len(points))
        for point in points:
            tag = tag_of(point)
            progress.update(task, description=f"{title} {point.label}")
            if before is not None:
                before(tag)
            result = run_point(worker, settings, client, target=target, point=point, tag=tag,
                               output_file=output_file, log=logs / f"{tag}.log")
            results.append(result)
            progress.advance(task)
            if not on_result(result):
                break
    return results
