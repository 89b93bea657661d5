"""Execution of server specs: each runtime starts, watches and stops what this project started.

``process`` runs servers as local processes (pid and log files under RUN_DIR); ``docker`` runs
them as labelled containers on a local or ``ssh://`` engine. Both answer the same ``Runtime``
protocol, so readiness, tasks and experiments never ask which one they drive.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sglbench.errors import ConfigError
from sglbench.settings import Runtime as RuntimeName
from sglbench.settings import Settings
from sglbench.specs import ServerSpec


@dataclass(frozen=True)
class Instance:
    """One server this project started, as a runtime sees it now."""

    name: str
    role: str
    runtime: str
    where: str  # pid, or container id @ engine
    url: str
    state: str  # running, exited(code), ...
    run_id: str


class Runtime(Protocol):
    """What readiness, tasks and experiments need from a runtime."""

    def describe(self, spec: ServerSpec) -> str:
        """The equivalent shell command (``--dry-run``): a command line or a ``docker run``."""

    def start(self, spec: ServerSpec, run_id: str) -> None:
        """Start ``spec`` (replacing an old instance of ours with the same name)."""

    def exit_code(self, spec: ServerSpec) -> int | None:
        """None while it runs; its exit code once it has stopped (or never started)."""

    def log_tail(self, spec: ServerSpec, lines: int = 40) -> str:
        """The last lines of its log, for error messages."""

    def log_lines(self, spec: ServerSpec, follow: bool = False) -> Iterator[str]:
        """Its whole log, line by line; with ``follow``, until interrupted or it stops."""

    def stop(self, spec: ServerSpec) -> bool:
        """Stop it if it is ours and running; True if something was stopped."""

    def instances(self) -> list[Instance]:
        """Everything of ours this runtime knows of (running or not)."""


def runtime_for(settings: Settings, name: RuntimeName) -> Runtime:
    """The runtime called ``name`` (``process`` or ``docker``), built from ``settings``.

    Raises:
        ConfigError: the docker runtime is asked for but not installed in this checkout.
    """
    if name == "process":
        from sglbench.runtime.process import ProcessRuntime

        return ProcessRuntime(settings)
    try:
        # Imported lazily: the docker SDK (and an engine) is only needed when a role uses it.
        docker = importlib.import_module("sglbench.runtime.docker")
    except ImportError as exc:
        raise ConfigError(
            f"RUNTIME=docker: the docker runtime is not available ({exc}); "
            "use RUNTIME=process or install the docker extra"
        ) from None
    runtime: Runtime = docker.DockerRuntime(settings)
    return runtime
