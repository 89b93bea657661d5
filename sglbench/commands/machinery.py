"""The task machinery: settings loading (``.env`` or $SGLBENCH_ENV_FILE, then the environment,
then ``--set KEY=VALUE``), one-line user errors, the ``sgl_task`` decorator, the console, the
tables of ``config`` and ``status``, and the argument parsers. Only this package and
``tasks.py`` read ``os.environ``.
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
from sglbench.types import BENCH_MODES, BenchMode

if TYPE_CHECKING:
    # Imported where needed, so that `invoke bench` and `invoke plot` start without the
    # runtimes, httpx (deploy) or pandas (results).
    from sglbench.execute.runtime import Instance

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


