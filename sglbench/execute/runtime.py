"""The runtime protocol: how servers and the router are started, watched and stopped.

``process`` runs them as local processes (pid and log files under RUN_DIR); ``docker`` runs
servers as labelled containers on a local or ``ssh://`` engine. Both answer the same ``Runtime``
protocol, and everything outside the runtime modules reaches them only through it
(``sglbench.execute.runtimes.runtime_for``), so deploy, readiness and compare never ask which
one they drive.
A runtime touches only what it started: pid files with creation times, container labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sglbench.plan.servers import Command
from sglbench.types import InstanceState, RuntimeName

# Exit code reported for a process or container that stopped when nobody can learn its real
# code any more (another command was its parent, or its container was removed).
UNKNOWN_EXIT = -1000


@dataclass(frozen=True)
class Instance:
    """One server or router this project started, as a runtime sees it now."""

    name: str
    role: str
    runtime: RuntimeName
    where: str  # pid, or container id @ engine
    url: str
    state: InstanceState
    exit_code: int | None  # None while running, UNKNOWN_EXIT when it cannot be known
    run_id: str

    @property
    def shown_state(self) -> str:
        """``running``, ``exited`` or ``exited(CODE)``, for tables."""
        if self.state == "running":
            return "running"
        return "exited" if self.exit_code in (None, UNKNOWN_EXIT) else f"exited({self.exit_code})"


class Runtime(Protocol):
    """What deploy, readiness and compare need from a runtime."""

    name: RuntimeName

    def describe(self, spec: Command) -> str:
        """The equivalent shell command (``--dry-run``): a command line or a ``docker run``."""

    def start(self, spec: Command, run_id: str) -> None:
        """Start ``spec`` (replacing an old instance of ours with the same name)."""

    def exit_code(self, spec: Command) -> int | None:
        """None while it runs; its exit code once it has stopped (or never started)."""

    def log_tail(self, spec: Command, lines: int = 40) -> str:
        """The last lines of its log, for error messages."""

    def log_lines(self, spec: Command, follow: bool = False) -> Iterator[str]:
        """Its whole log, line by line; with ``follow``, until interrupted or it stops."""

    def stop(self, spec: Command) -> bool:
        """Stop it if it is ours and running; True if something was stopped."""

    def instances(self) -> list[Instance]:
        """Everything of ours this runtime knows of (running or not)."""

    def stop_run(self, run_id: str | None) -> list[Instance]:
        """Stop everything of ours that run ``run_id`` started (None: of every run).

        Returns:
            What was found, as it was before the stop (``state`` tells what was still running).
        """
