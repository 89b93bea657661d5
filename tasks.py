"""Invoke tasks: the original ``scripts/NN_*.sh`` steps, plus status, logs, down and compare.

Each task parses its arguments, loads the settings (``.env`` or $SGLBENCH_ENV_FILE, then the
environment, then ``--set KEY=VALUE``), calls one sglbench function and prints. A user error is
one line and a non-zero exit (SGLBENCH_DEBUG=1 shows the traceback). ``invoke --list`` and
``invoke --help TASK`` describe every task and argument.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from sglbench import lifecycle
from sglbench.errors import ConfigError, SglbenchError
from sglbench.settings import ENV_FILE_VAR, LoadedSettings, Role, Settings, load_settings
from sglbench.specs import Mode, sweep_points

# Repeatable options (--set, --path): invoke gives a list, or None when not given.
Sets = Sequence[str] | None
DEMO_ENV = Path(__file__).parent / "examples" / "demo.env"
COMMON_HELP = {
    "set": "override a setting, KEY=VALUE (repeatable), e.g. --set AGG_PORT=30010",
    "dry-run": "print the commands it would run; start nothing",
}


def load(set_: Sequence[str] | None, env_file: Path | None = None) -> LoadedSettings:
    """Settings from ``env_file`` (default: $SGLBENCH_ENV_FILE or .env), environment, --set."""
    if env_file is None:
        env_file = Path(os.environ.get(ENV_FILE_VAR, ".env"))
        if ENV_FILE_VAR in os.environ and not env_file.is_file():
            raise ConfigError(f"{ENV_FILE_VAR}={env_file}: no such file")
    return load_settings(env_file, os.environ, overrides(set_ or []))


def overrides(items: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a mapping."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set AGG_PORT=30010")
        out[key.strip()] = value
    return out


@contextmanager
def user_errors() -> Iterator[None]:
    """SglbenchError -> one line and its exit code; Ctrl-C -> exit 130 without a traceback."""
    try:
        yield
    except SglbenchError as err:
        if os.environ.get("SGLBENCH_DEBUG"):
            raise
        raise Exit(f"error: {err}", err.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", 130) from None


def sgl_task(**help_: str) -> Callable[[Callable[..., None]], Any]:
    """``@task`` with help for the common arguments and one-line user errors."""

    def decorate(body: Callable[..., None]) -> Any:
        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> None:
            with user_errors():
                body(*args, **kwargs)

        params = list(inspect.signature(body).parameters)
        names = {p.strip("_").replace("_", "-") for p in params}
        helps = {k: v for k, v in COMMON_HELP.items() if k in names}
        iterable = [p for p in params if p in ("set_", "path")]
        return task(help={**helps, **help_}, iterable=iterable)(run)

    return decorate


def console() -> Console:
    """Where tasks print (stdout; no colours when it is not a terminal)."""
    # Not a terminal (CI, pipes): wide enough that tables keep URLs and run ids whole.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_lines(lines: Sequence[str]) -> None:
    """Print ``--dry-run`` output as plain text (no markup interpretation)."""
    for line in lines:
        print(line)


# --- setup and config --------------------------------------------------------------------------

@sgl_task()
def setup(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """Control-host venv with the bench client, routers and plotting (same as `make setup`)."""
    command = f"make setup VENV={load(set_).settings.venv_dir}"
    if dry_run:
        print(command)
        return
    c.run(command)


@sgl_task()
def config(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """The effective settings and where each value came from (secrets masked)."""
    table = Table("key", "value", "from", title="sglbench settings")
    for key, value, source in load(set_).rows():
        table.add_row(key, value, source)
    console().print(table)


# --- servers and router ------------------------------------------------------------------------

PULL_HELP = "docker runtime: pull SGLANG_IMAGE first (with progress) on the role's engine"

def up_role_task(role: Role, set_: Sequence[str] | None, dry_run: bool, pull: bool) -> None:
    """Body shared by agg, prefill and decode."""
    settings = load(set_).settings
    if dry_run:
        print_lines(lifecycle.describe_role(settings, role))
        return
    if pull:
        from sglbench.runtime.docker_pull import pull_image

        pull_image(settings, console(), roles=[role])
    lifecycle.up_role(settings, role, run_id=lifecycle.new_run_id(), console=console())


@sgl_task(pull=PULL_HELP)
def agg(c: Context, set_: Sets = None, dry_run: bool = False, pull: bool = False) -> None:
    """Aggregated server (sglang.launch_server ... --mem-fraction-static 0.9); waits until ready."""
    up_role_task("agg", set_, dry_run, pull)


@sgl_task(pull=PULL_HELP)
def prefill(c: Context, set_: Sets = None, dry_run: bool = False, pull: bool = False) -> None:
    """Prefill server(s) (--disaggregation-mode prefill, bootstrap port); waits until ready."""
    up_role_task("prefill", set_, dry_run, pull)


@sgl_task(pull=PULL_HELP)
def decode(c: Context, set_: Sets = None, dry_run: bool = False, pull: bool = False) -> None:
    """Decode server(s) (--disaggregation-mode decode); waits until ready."""
    up_role_task("decode", set_, dry_run, pull)


@sgl_task(detach="run in the background and return once it routes to every worker")
def pd_router(
    c: Context, set_: Sets = None, dry_run: bool = False, detach: bool = False
) -> None:
    """PD router in front of prefill and decode; foreground (Ctrl-C stops it) unless --detach."""
    settings = load(set_).settings
    if dry_run:
        print_lines(lifecycle.describe_mode(settings, "pd")[-1:])
        return
    lifecycle.up_router(settings, detach=detach, run_id=lifecycle.new_run_id(), console=console())


# --- bench, plot, report -----------------------------------------------------------------------

BENCH_MODES: dict[str, bool | None] = {"auto": None, "agg": False, "pd": True}


@sgl_task(
    tag="names the results file results/TAG.jsonl and its rows",
    base_url="what to benchmark (default: the router if it answers, else the agg server)",
    mode="auto (detect PD from the router), agg or pd (--pd-separated)",
)
def bench(
    c: Context, tag: str, set_: Sets = None, dry_run: bool = False, base_url: str = "",
    mode: str = "auto",
) -> None:  # fmt: skip
    """SGLang's bench client with the BENCH_* workload; appends to RESULTS_DIR/TAG.jsonl."""
    from sglbench.bench import run_bench

    if mode not in BENCH_MODES:
        raise ConfigError(f"--mode {mode}: expected auto, agg or pd")
    settings = load(set_).settings
    path = run_bench(settings, tag=tag, base_url=base_url or None, pd=BENCH_MODES[mode],
                     dry_run=dry_run, console=console())  # fmt: skip
    if not dry_run:
        print(f"results: {path}")


@sgl_task(
    path="a result file or directory (repeatable; default: RESULTS_DIR)",
    out="where the PNGs go (default: RESULTS_DIR)",
)
def plot(
    c: Context, path: Sets = None, out: str = "", set_: Sets = None,
    dry_run: bool = False,
) -> None:  # fmt: skip
    """Summary table (tag, throughput, mean E2E, mean TTFT) and the per-tag PNGs."""
    from sglbench.report import plot_by_tag, print_summary
    from sglbench.results import load_results

    settings = load(set_).settings
    inputs = [Path(p) for p in path or []] or [Path(settings.results_dir)]
    df = load_results(inputs)
    print_summary(df, console())
    if dry_run:
        return
    for png in plot_by_tag(df, Path(out or settings.results_dir)):
        print(f"wrote {png}")


@sgl_task(
    path="a result file, run directory or results directory (repeatable; default: RESULTS_DIR)",
    out="where report.md, report.html and the PNGs go (default: RESULTS_DIR/report)",
    force="compare modes even when their workloads differ (the report says so)",
)
def report(
    c: Context, path: Sets = None, out: str = "", force: bool = False,
    set_: Sets = None, dry_run: bool = False,
) -> None:  # fmt: skip
    """Markdown and HTML report: summary, ratios, Pareto plots, goodput, sanity findings."""
    from sglbench.report import build_report

    s = load(set_).settings
    inputs = [Path(p) for p in path or []] or [Path(s.results_dir)]
    out_dir = Path(out or Path(s.results_dir) / "report")
    if dry_run:
        print(f"would write {out_dir}/report.md and report.html from {', '.join(map(str, inputs))}")
        return
    paths = build_report(inputs, out_dir, s.bench_slo_ttft_ms, s.bench_slo_itl_ms, force)
    print(f"report: {paths.markdown}\nreport: {paths.html}")


# --- status, logs, down ------------------------------------------------------------------------

@sgl_task()
def status(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """What this project started and whether it still runs."""
    table = Table("name", "role", "runtime", "where", "url", "state", "run id")
    for i in lifecycle.status(load(set_).settings):
        table.add_row(i.name, i.role, i.runtime, i.where, i.url, i.state, i.run_id)
    console().print(table if table.rows else "nothing of ours is running or known")


@sgl_task(
    name="agg, prefill, decode, router, or one worker such as decode-1",
    follow="keep printing new lines until it stops (Ctrl-C ends)",
)
def logs(
    c: Context, name: str, follow: bool = False, set_: Sets = None, dry_run: bool = False
) -> None:
    """The log of a server or the router."""
    for line in lifecycle.log_lines(load(set_).settings, name, follow=follow):
        print(line, flush=follow)


@sgl_task()
def down(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """Stop exactly what this project started (pid files, container labels), router first."""
    settings = load(set_).settings
    if dry_run:
        for i in lifecycle.status(settings):
            print(f"would stop {i.name} ({i.runtime}, {i.where}, {i.state})")
        return
    lifecycle.down(settings, console())


# --- compare and demo --------------------------------------------------------------------------

COMPARE_HELP = {
    "modes": "comma-separated modes, in order (agg, pd)",
    "resume": "run id to continue: skips points already in results/<run-id>/",
    "force": "go on even if a resumed run's workload differs",
}


MODES: dict[str, Mode] = {"agg": "agg", "pd": "pd"}


def parse_modes(text: str) -> list[Mode]:
    """``agg,pd`` -> ["agg", "pd"]; anything else is a one-line error."""
    modes: list[Mode] = []
    for item in (m.strip() for m in text.split(",") if m.strip()):
        if item not in MODES:
            raise ConfigError(f"--modes {text}: unknown mode {item!r}; expected agg, pd or both")
        modes.append(MODES[item])
    if not modes:
        raise ConfigError("--modes: empty; expected agg, pd or agg,pd")
    return modes


def compare_task(settings: Settings, modes: str, resume: str, force: bool, dry_run: bool) -> Path:
    """Body shared by compare and demo."""
    mode_list = parse_modes(modes)
    if dry_run:
        points = len(sweep_points(settings))
        for mode in mode_list:
            print_lines(lifecycle.describe_mode(settings, mode))
            print(f"# bench {mode}: {points} sweep point(s); `invoke bench --dry-run` shows the "
                  "client command")  # fmt: skip
        return Path(settings.results_dir)
    from sglbench.experiment import compare

    return compare(settings, modes=mode_list, resume=resume or None, force=force,
                   console=console())  # fmt: skip


@sgl_task(**COMPARE_HELP)
def compare(
    c: Context, modes: str = "agg,pd", resume: str = "", force: bool = False,
    set_: Sets = None, dry_run: bool = False,
) -> None:  # fmt: skip
    """Agg then PD with one workload: start, wait, bench (sweep), stop; then the summary."""
    run_dir = compare_task(load(set_).settings, modes, resume, force, dry_run)
    if not dry_run:
        print(f"run directory: {run_dir}")


@sgl_task()
def demo(c: Context, set_: Sets = None, dry_run: bool = False) -> None:
    """`invoke compare` on the simulator with examples/demo.env (this machine, no GPU)."""
    settings = load(set_, env_file=DEMO_ENV).settings
    run_dir = compare_task(settings, "agg,pd", "", False, dry_run)
    if dry_run:
        return
    from sglbench.report import plot_by_tag, print_summary
    from sglbench.results import load_results

    df = load_results([run_dir])
    print_summary(df, console(), title="Demo: agg vs PD on the simulator")
    for png in plot_by_tag(df, run_dir):
        print(f"plot: {png}")
    print(f"full report: invoke report --path {run_dir} --out {run_dir / 'report'}")


ns = Collection(setup, config, agg, prefill, decode, pd_router, bench, plot, report, status,
                logs, down, compare, demo)  # fmt: skip
# Tasks print as they go; output is not captured.
ns.configure({"run": {"echo": True}})
