"""The task bodies and their shared machinery, used by the invoke tasks in ``tasks.py``.

``tasks.py`` declares each task (its name, arguments and help) and calls one function here, so a
task body stays a few lines. This module holds what they share: settings loading (``.env`` or
$SGLBENCH_ENV_FILE, then the environment, then ``--set KEY=VALUE``), one-line user errors, the
``sgl_task`` decorator, the console, and the bodies of the tasks that do more than one call
(compare, demo, plot, report). Only this module and ``tasks.py`` read ``os.environ``.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from sglbench.errors import ConfigError, SglbenchError
from sglbench.settings import ENV_FILE_VAR, LoadedSettings, Settings, load_settings
from sglbench.types import BENCH_MODES, BenchMode, Role

if TYPE_CHECKING:
    # Imported by the task bodies that need them, so that `invoke bench` and `invoke plot`
    # start without the runtimes, httpx (deploy) or pandas (results).
    from sglbench.execute.runtime import Instance
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
            # The process exits next: spare the interpreter's exit a collection over every
            # object alive (pandas and matplotlib make that a third of a second).
            gc.freeze()

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
    from sglbench.execute import deploy

    if dry_run:
        print_lines(deploy.describe_role(settings, role))
        return
    if pull:
        from sglbench.execute.docker_pull import pull_image

        pull_image(settings, console(), roles=[role])
    deploy.up_role(settings, role, run_id=deploy.new_run_id(), console=console())


def down_task(settings: Settings, *, dry_run: bool) -> None:
    """``invoke down``: stop what we started (``--dry-run``: say what would be stopped)."""
    from sglbench.execute import deploy

    if not dry_run:
        deploy.down(settings, console())
        return
    for i in deploy.status(settings):
        print(f"would stop {i.name} ({i.runtime}, {i.where}, {i.shown_state})")


def compare_task(settings: Settings, modes: str, resume: str, force: bool, dry_run: bool,
                 *, table: bool = True) -> Path | None:
    """``invoke compare``: run the modes, or with ``dry_run`` print what would run.

    Args:
        settings: the run's settings.
        modes: ``--modes`` as typed (``agg,pd``).
        resume: a run id to continue, or "".
        force: resume even when the workload differs.
        dry_run: print the servers, the router and every client command; run nothing.
        table: print compare's per-point table at the end (demo prints its own summary).

    Returns:
        The run directory, or None for a dry run.
    """
    mode_list = split_modes(modes)
    # compare imports the bench client machinery; keep `invoke --list` and the rest quick.
    from sglbench.execute import compare

    if dry_run:
        print_lines(compare.describe_compare(settings, mode_list, resume or None, force))
        return None
    return compare.compare(settings, modes=mode_list, resume=resume or None, force=force,
                           console=console(), table=table)  # fmt: skip


def demo_task(settings: Settings, *, dry_run: bool) -> None:
    """``invoke demo``: compare agg and PD, then the summary and the report (md + html)."""
    run_dir = compare_task(settings, "agg,pd", "", False, dry_run, table=False)
    if run_dir is None:
        print(f"would write the report to {Path(settings.results_dir)}/<run-id>/report/")
        return
    from sglbench.report import build_report, print_summary
    from sglbench.results.load import load_results

    print_summary(load_results([run_dir]), console(), title="Demo: agg vs PD on the simulator")
    done = build_report([run_dir], run_dir / "report", settings.bench_slo_ttft_ms,
                        settings.bench_slo_itl_ms, False)  # fmt: skip
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

    done = build_report(inputs, out_dir, settings.bench_slo_ttft_ms, settings.bench_slo_itl_ms,
                        force)  # fmt: skip
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
