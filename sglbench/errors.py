"""The small exception tree of sglbench.

Every error a user can cause or meet is one of these; its ``str()`` is the one line shown to the
user (naming the key or flag, what was wrong, what to do). ``exit_code`` is what the CLI exits with.

    SglbenchError                 base, exit 1
    ├── ConfigError               bad .env key/value or command-line flag, exit 2, nothing started
    ├── ResultsError              missing or unreadable result files, exit 2
    ├── ServerError               a server/router failed to start or become ready, exit 1
    │   └── ReadinessError        not ready before the deadline, or exited while we waited
    ├── DockerError               engine unreachable, image missing, GPU runtime absent, ... exit 1
    └── BenchError                the bench client failed, exit 1
"""

from __future__ import annotations


class SglbenchError(Exception):
    """Base of every error sglbench reports to a user as one line."""

    exit_code = 1


class ConfigError(SglbenchError):
    """A setting or flag is wrong: nothing was started."""

    exit_code = 2


class ResultsError(SglbenchError):
    """Result files are missing or cannot be read."""

    exit_code = 2


class ServerError(SglbenchError):
    """A server or the router could not be started."""


class ReadinessError(ServerError):
    """A server did not become ready before its deadline, or exited while we waited."""


class DockerError(SglbenchError):
    """The Docker engine refused or failed an operation."""


class BenchError(SglbenchError):
    """SGLang's bench client failed."""
