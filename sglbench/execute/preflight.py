"""Everything that can be checked before anything starts, checked before anything starts.

Before a run makes its directory or starts a server: the ports every topology of the run will
listen on (router metrics port included) are free on this machine, or held by our own stale
servers; no other live run holds them (``runs``); the server interpreter and local model path
exist; ROUTER_EXTRA_ARGS parse with the router's own parser; BENCH_EXTRA_ARGS with the bench
client's (in its worker, see ``client_worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sglbench.errors import ConfigError, ServerError
from sglbench.execute.process import python_for
from sglbench.execute.runs import check_free, held_by
from sglbench.hosts import is_loopback
from sglbench.settings import Settings
from sglbench.types import Topology


def check_run(settings: Settings, topologies: Sequence[Topology], run_id: str = "") -> None:
    """The checks of a run of ``topologies`` (``run_id``: its own, when resuming).

    Raises:
        ConfigError: a path, an executable or extra router args are wrong.
        ServerError: a port is busy, or another live run holds one of the run's ports or GPUs.
    """
    check_executables(settings)
    check_router_args(settings)
    held, gpus = held_by(settings, topologies)
    check_free(settings, run_id, held, gpus)
    for listener in held:
        host, _, port = listener.rpartition(":")
        if is_loopback(host) and _busy(host, int(port)):
            raise ServerError(f"{listener}: something already listens there (not a live run of "
                              "ours); stop it or choose another port (`invoke config` shows "
                              "which key sets it)")


def _busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def check_executables(settings: Settings) -> None:
    """SERVER_PYTHON and a local MODEL_PATH exist where the process runtime needs them.

    Raises:
        ConfigError: naming the key.
    """
    if not settings.roles_on("process"):
        return
    python = python_for(settings)
    if shutil.which(python) is None and not os.access(python, os.X_OK):
        raise ConfigError(f"SERVER_PYTHON={settings.server_python}: not an executable on this "
                          "host; give the python that has sglang (or empty: this one)")
    model = settings.model_path
    local = model.startswith(("/", ".", "~"))
    if not settings.simulate and local and not Path(model).expanduser().is_dir():
        raise ConfigError(f"MODEL_PATH={model}: no such directory on this host (the process "
                          "runtime loads it here); fix the path or use a hub id")


class _ParseError(Exception):
    """An error of a parser we run only to check arguments."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _ParseError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _ParseError(message or f"exits with status {status} (help or version flags)")


def check_router_args(settings: Settings) -> None:
    """ROUTER_EXTRA_ARGS through the router's own parser (with the flags we pass), at once.

    Raises:
        ConfigError: ``ROUTER_EXTRA_ARGS: <the parser's one line>``.
    """
    extra = shlex.split(settings.router_extra_args)
    if not extra:
        return
    argv = ["--pd-disaggregation", "--prefill", "http://h:1", "--decode", "http://h:2", *extra]
    try:
        with _quiet():
            _parse_router(settings.router_impl, argv)
    except (_ParseError, ValueError) as exc:
        raise ConfigError(f"ROUTER_EXTRA_ARGS={settings.router_extra_args!r}: the router "
                          f"rejects it ({str(exc).strip()}); fix or remove it") from None


def _parse_router(impl: str, argv: list[str]) -> Any:
    if impl == "smg":
        from smg.router_args import RouterArgs
    else:
        # Only the argument module: sglang_router.launch_router imports all of sglang (14 s).
        from sglang_router.router_args import RouterArgs
    parser = _Parser(prog="router")
    RouterArgs.add_cli_args(parser, use_router_prefix=False)
    return RouterArgs.from_cli_args(parser.parse_args(argv), use_router_prefix=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
