"""The task bodies and their shared machinery, used by the invoke tasks in ``tasks.py``.

``tasks.py`` declares each task (its name, arguments and help) and calls one function here, so a
task body stays a few lines. This module holds what they share: settings loading (``.env`` or
$SGLBENCH_ENV_FILE, then the environment, then ``--set KEY=VALUE``), one-line user errors, the
``sgl_task`` decorator, the console, and the bodies of the tasks that do more than one call
(compare, demo, plot, report). Only this module and ``tasks.py`` read ``os.environ``.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from sglbench.errors import ConfigError, ServerError, SglbenchError
from sglbench.execute import deploy
from sglbench.execute.runs import acquire, live_runs, release
from sglbench.execute.runtime import Instance
from sglbench.execute.runtimes import check_start
from sglbench.plan.topology import run_topologies
from sglbench.settings import ENV_FILE_VAR, LoadedSettings, Settings, load_settings
from sglbench.types import BENCH_MODES, BenchMode, Role

if TYPE_CHECKING:  # pandas-backed; imported only by the tasks that read results
    from sglbench.results.checks import Finding

DEBUG_VAR = "SGLBENCH_DEBUG"
# Repeatable options (--set, --path): invoke gives a list, or None when not given.
Sets = Sequence[str] | None
COMMON_HELP = {
    "set": "override a setting, KEY=VALUE (repeatable), e.g. --set AGG_PORT=30010",
    "dry-run": "print what it would run, stop or write; start, stop and write nothing",
}


# --- settings and errors -----------------------------------------------------------------------

def load(set_: Sets, env_file: Path | None = None,
         environ: Mapping[str, str] | None = None) -> LoadedSettings:
    """Settings from ``env_file`` (default: $SGLBENCH_ENV_FILE or .env), environment, ``--set``.

    Args:
        set_: the ``--set KEY=VALUE`` items (None: none given).
        env_file: the settings file; None picks $SGLBENCH_ENV_FILE, else ``.env`` here.
        environ: the environment (default: this process's).

    Raises:
        ConfigError: $SGLBENCH_ENV_FILE names a missing file, a bad ``--set``, a bad value.
    """
    env = os.environ if environ is None else environ
    if env_file is None:
        env_file = Path(env.get(ENV_FILE_VAR, ".env"))
        if ENV_FILE_VAR in env and not env_file.is_file():
            raise ConfigError(f"{ENV_FILE_VAR}={env_file}: no such file")
    return load_settings(env_file, env, overrides(set_ or []))


def in_allocation(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """``settings`` with the Slurm allocation of SLURM_JOB_ID when a role runs on Slurm.

    Raises:
        ConfigError: SLURM_JOB_ID names a job that is gone.
    """
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID", "")
    if not job_id or not settings.roles_on("slurm"):
        return settings
    from sglbench.execute.slurm_setup import allocation_of

    found = allocation_of(job_id, env.get("SLURM_JOB_NODELIST") or None)
    return settings.model_copy(update={"allocation": found})


def overrides(items: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a mapping (a later item wins).

    Raises:
        ConfigError: an item without ``=`` or without a key.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set AGG_PORT=30010")
        out[key.strip()] = value
    return out


@contextmanager
def user_errors(environ: Mapping[str, str] | None = None) -> Iterator[None]:
    """User errors -> one line and an exit code.

    SglbenchError: its message and exit code. A file-system error (``--out /dev/null/x``,
    ``RESULTS_DIR`` under a file, no permission): ``error: PATH: REASON``, exit 1. Ctrl-C (130)
    and a closed pipe (141) quietly. With $SGLBENCH_DEBUG set the error propagates, traceback
    and all.
    """
    debug = bool((os.environ if environ is None else environ).get(DEBUG_VAR))
    try:
        yield
    except SglbenchError as err:
        if debug:
            raise
        raise Exit(f"error: {err}", err.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", 130) from None
    except BrokenPipeError:
        # `invoke compare --dry-run | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not fail again, and exit as a shell pipeline would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise Exit(code=141) from None
    except OSError as err:
        if debug:
            raise
        raise Exit(f"error: {os_error_line(err)}", 1) from None


def os_error_line(err: OSError) -> str:
    """``/dev/null/x: Not a directory``: the path and the reason, without the errno noise."""
    if err.filename is None:
        return str(err)
    paths = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    return f"{paths}: {err.strerror or err}"


def sgl_task(*, dry_run: bool = True, **help_: str) -> Callable[[Callable[..., None]], Any]:
    """``@task`` with help for the common arguments (--set, --dry-run) and one-line user errors.

    ``set_`` and ``path`` parameters become repeatable options.

    Args:
        dry_run: the task has side effects (starts, stops or writes something) and so a
            ``dry_run`` parameter; False for tasks that only read and print (config, status,
            logs), which then must not offer a ``--dry-run`` that would do nothing.
        **help_: help of the task's own arguments.

    Raises:
        TypeError: the body's ``dry_run`` parameter disagrees with ``dry_run`` (a task bug).
    """

    def decorate(body: Callable[..., None]) -> Any:
        if ("dry_run" in inspect.signature(body).parameters) != dry_run:
            raise TypeError(f"task {body.__name__}: a dry_run parameter "
                            f"{'is required' if dry_run else 'does nothing'} here")  # fmt: skip

        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> None:
            with user_errors():
                body(*args, **kwargs)
                sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit

        params = list(inspect.signature(body).parameters)
        names = {p.strip("_").replace("_", "-") for p in params}
        helps = {k: v for k, v in COMMON_HELP.items() if k in names}
        iterable = [p for p in params if p in ("set_", "path")]
        return task(help={**helps, **help_}, iterable=iterable)(run)

    return decorate


# --- output ------------------------------------------------------------------------------------

def console() -> Console:
    """Where tasks print (stdout; no colours when it is not a terminal)."""
    # Not a terminal (CI, pipes): wide enough that tables keep URLs and run ids whole.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_lines(lines: Sequence[str]) -> None:
    """Print ``--dry-run`` output as plain text (no markup interpretation)."""
    for line in lines:
        print(line)


def config_table(loaded: LoadedSettings) -> Table:
    """``invoke config``: every setting, its value (secrets masked) and where it came from."""
    table = Table("key", "value", "from", title="sglbench settings")
    for key, value, source in loaded.rows():
        table.add_row(key, value, source)
    return table


def status_table(instances: Sequence[Instance]) -> Table | str:
    """``invoke status``: one row per server or router we started (or a sentence if none)."""
    table = Table("name", "role", "runtime", "where", "url", "state", "run id")
    for i in instances:
        table.add_row(i.name, i.role, i.runtime, i.where, i.url, i.shown_state, i.run_id)
    return table if table.rows else "nothing of ours is running or known"


# --- argument parsers --------------------------------------------------------------------------

def split_modes(text: str) -> list[str]:
    """``--modes " pd , agg"`` -> ["pd", "agg"], unchecked.

    ``plan.modes.run_modes`` is the one place that knows the modes and refuses the others
    (an empty item included: ``--modes ""`` is an error there, not "run nothing").
    """
    return [m.strip() for m in text.split(",")]


def parse_bench_mode(text: str) -> BenchMode:
    """``invoke bench --mode``: auto (detect PD from what answers), agg or pd.

    Raises:
        ConfigError: anything else.
    """
    for mode in BENCH_MODES:
        if text == mode:
            return mode
    raise ConfigError(f"--mode {text}: expected auto, agg or pd")


def result_inputs(settings: Settings, paths: Sets) -> list[Path]:
    """``--path`` values, or RESULTS_DIR when none is given."""
    return [Path(p) for p in paths or []] or [Path(settings.results_dir)]


# --- task bodies -------------------------------------------------------------------------------

def up_role_task(settings: Settings, role: Role, *, dry_run: bool, pull: bool) -> None:
    """``invoke agg|prefill|decode``: start every worker of ``role`` and wait until ready."""
    settings = in_allocation(settings)
    if dry_run:
        print_lines(deploy.describe_role(settings, role))
        return
    if pull:
        from sglbench.execute.docker_pull import pull_image

        pull_image(settings, console(), roles=[role])
    run_id = deploy.new_run_id()
    topology = settings.topology("agg" if role == "agg" else "pd")
    check_start(settings, [topology])
    acquire(settings, run_id, f"invoke {role}", [topology], [role])
    deploy.up_role(settings, role, run_id=run_id, console=console())


def logs_task(settings: Settings, name: str, *, follow: bool) -> None:
    """``invoke logs NAME``: its log; one line and exit 1 when there is none."""
    shown = 0
    for line in log_lines(settings, name, follow=follow):
        print(line, flush=follow)
        shown += 1
    if shown == 0:
        raise ServerError(f"logs {name}: no log of {name} here (it has not run with these "
                          f"settings: RUN_DIR={settings.run_dir}); `invoke status` lists what ran")


def down_task(settings: Settings, *, run_id: str = "", dry_run: bool) -> None:
    """``invoke down [--run ID]``: stop what we started, or what run ID started.

    ``--dry-run`` says what would be stopped. The runs stopped release what they held.
    """
    if not dry_run:
        if run_id and run_id not in live_runs(settings) and not any(
                i.run_id == run_id for i in deploy.status(settings)):
            raise ConfigError(f"--run {run_id}: no run of that id is known here; `invoke "
                              "status` lists the runs of what runs")
        deploy.down(settings, console(), run_id=run_id or None)
        if run_id:
            release(settings, run_id)
        else:
            live_runs(settings)  # drops the locks of runs that no longer run
        return
    for i in deploy.status(settings):
        if not run_id or i.run_id == run_id:
            print(f"would stop {i.name} ({i.runtime}, {i.where}, {i.shown_state})")


def compare_task(settings: Settings, modes: str | None, resume: str, force: bool, dry_run: bool,
                 *, topologies: str = "", gpus: int = 0, table: bool = True) -> Path | None:
    """``invoke compare``: run the topologies, or with ``dry_run`` print what would run.

    Args:
        settings: the run's settings.
        modes: ``--modes`` as typed (``agg,pd``); None when not given.
        resume: a run id to continue, or "".
        force: resume even when the workload differs.
        dry_run: print the servers, the router and every client command; run nothing.
        topologies: ``--topologies`` as typed (``aggx2,1p3d``); "" when not given.
        gpus: ``--gpus`` (a GPU budget); 0 when not given.
        table: print compare's per-point table at the end (demo prints its own summary).

    Returns:
        The run directory, or None for a dry run.
    """
    if gpus < 0:
        raise ConfigError(f"--gpus {gpus}: expected a GPU count of at least 1")
    mode_list = [] if modes is None else split_modes(modes)
    topology_list = split_modes(topologies) if topologies else []
    budget = gpus or None
    settings = in_allocation(settings)
    # compare imports the bench client machinery; keep `invoke --list` and the rest quick.
    from sglbench.execute import compare

    if not dry_run:  # an allocation, nodes, a container tool: before anything is written
        check_start(settings, run_topologies(settings, modes=mode_list,
                                             topologies=topology_list, gpus=budget))
    if dry_run:
        print_lines(compare.describe_compare(settings, mode_list, resume or None, force,
                                             topologies=topology_list, gpus=budget))
        return None
    run_dir = compare.compare(settings, modes=mode_list, topologies=topology_list, gpus=budget,
                              resume=resume or None, force=force, console=console(),
                              table=table)  # fmt: skip
    print_verdict(settings, run_dir)
    return run_dir


def slo_args(settings: Settings) -> tuple[float | None, float | None, float]:
    """The report's SLOs: TTFT, the per-token target (TPOT or ITL) and the attainment share."""
    per_token = settings.bench_slo_tpot_ms or settings.bench_slo_itl_ms
    return settings.bench_slo_ttft_ms, per_token, settings.bench_slo_attainment


def print_verdict(settings: Settings, run_dir: Path) -> None:
    """The verdict of a run, in words (nothing when it measured one kind of topology only)."""
    from sglbench.report import verdict_lines

    ttft, per_token, attainment = slo_args(settings)
    lines = verdict_lines([run_dir], ttft, per_token, attainment)
    if lines:
        console().print("[bold]verdict[/bold]")
        for line in lines:
            console().print(line, markup=False, highlight=False)


def submit_task(settings: Settings, compare_args: Sequence[str], *, modes: str | None,
                topologies: str, gpus: int, dry_run: bool) -> None:
    """``invoke submit``: ``invoke compare COMPARE_ARGS`` as a batch job (``dry_run``: print
    the script); the script's path and the job id are printed.
    """
    from sglbench.execute import slurm_jobs

    plan = run_topologies(settings, modes=[] if modes is None else split_modes(modes),
                          topologies=split_modes(topologies) if topologies else [],
                          gpus=gpus or None)  # fmt: skip
    command = [sys.executable, "-m", "invoke", "compare", *compare_args]
    slurm_here = shutil.which("sbatch") is not None
    script, text = slurm_jobs.batch_job(settings, plan, command, Path.cwd(), deploy.new_run_id(),
                                        check_cluster=slurm_here or not dry_run)
    if dry_run:
        if not slurm_here:
            print("# sbatch not found here: the partition and its nodes are not checked")
        print(f"# would write {script} and submit it with sbatch --parsable:")
        print(text, end="")
        return
    job = slurm_jobs.submit_job(script, text)
    print(f"submitted job {job.job_id} ({job.name}): {job.script}")
    print("follow it with: invoke status; invoke logs job --follow; stop it: invoke down")


def log_lines(settings: Settings, name: str, *, follow: bool) -> Iterator[str]:
    """``invoke logs NAME``: a server or the router, or ``job``/``job-<id>`` (a submitted job)."""
    if name == "job" or (name.startswith("job-") and name[4:].isdigit()):
        from sglbench.execute.slurm_jobs import job_log_lines

        return job_log_lines(settings, name, follow=follow)
    return deploy.log_lines(settings, name, follow=follow)


def demo_task(settings: Settings, *, dry_run: bool) -> None:
    """``invoke demo``: compare the demo's topologies, then the summary and the report."""
    run_dir = compare_task(settings, None, "", False, dry_run, table=False)
    if run_dir is None:
        print(f"would write the report to {Path(settings.results_dir)}/<run-id>/report/")
        return
    from sglbench.report import build_report, print_summary
    from sglbench.results.load import load_results

    print_summary(load_results([run_dir]), console(), title="Demo: agg vs PD on the simulator")
    ttft, per_token, attainment = slo_args(settings)
    done = build_report([run_dir], run_dir / "report", ttft, per_token, False, attainment)
    print(f"report: {done.markdown}\nreport: {done.html}")
    for line in report_notes(done.findings, done.mismatches, done.simulated):
        print(line)


def plot_task(settings: Settings, paths: Sets, out: str, *, dry_run: bool) -> None:
    """``invoke plot``: the summary table, then the per-tag PNGs (``dry_run``: say which)."""
    inputs = result_inputs(settings, paths)
    out_dir = Path(out or settings.results_dir)
    if dry_run:
        print(f"would read {', '.join(map(str, inputs))}")
        print(f"would write {out_dir}/throughput_by_tag.png and e2e_latency_by_tag.png")
        return
    from sglbench.report import plot_by_tag, print_summary
    from sglbench.results.load import load_results

    df = load_results(inputs)
    print_summary(df, console())
    for png in plot_by_tag(df, out_dir):
        print(f"wrote {png}")


def report_task(settings: Settings, paths: Sets, out: str, force: bool, *,
                dry_run: bool) -> None:
    """``invoke report``: write report.md and report.html; say what they found."""
    inputs = result_inputs(settings, paths)
    out_dir = Path(out or Path(settings.results_dir) / "report")
    if dry_run:
        print(f"would write {out_dir}/report.md and report.html from {', '.join(map(str, inputs))}")
        return
    from sglbench.report import build_report

    ttft, per_token, attainment = slo_args(settings)
    done = build_report(inputs, out_dir, ttft, per_token, force, attainment)
    print(f"report: {done.markdown}\nreport: {done.html}")
    for line in report_notes(done.findings, done.mismatches, done.simulated):
        print(line)


def report_notes(findings: Sequence[Finding], mismatches: Sequence[str],
                 simulated: bool) -> list[str]:
    """What a report found, in a few lines: sanity findings by severity, mismatches, SIMULATED."""
    severities = [f.severity for f in findings]
    counts = ", ".join(f"{severities.count(s)} {s}" for s in dict.fromkeys(severities))
    lines = [f"sanity findings: {len(findings)}" + (f" ({counts}; listed in the report)"
                                                    if findings else "")]
    if mismatches:
        lines.append(f"workload mismatches: {len(mismatches)} (compared anyway: --force)")
    if simulated:
        lines.append("SIMULATED: numbers come from the sglbench simulator, not from GPUs")
    return lines
