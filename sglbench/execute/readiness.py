"""Wait until a server (or the router) answers, with a deadline, progress, and the log on failure.

A server is ready when ``GET /health_generate`` answers 200: SGLang generates one token for it,
so the whole pipeline works, not only the HTTP front. If the process or container exits while we
wait, we fail at once with its exit code and the last lines of its log instead of waiting for the
deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

from sglbench.errors import ReadinessError
from sglbench.execute.http import Probe, http_probe
from sglbench.execute.runtime import Runtime
from sglbench.plan.servers import ServerSpec

POLL_S = 0.25
LOG_LINES = 30


def wait_until(
    what: str,
    probe: Callable[[], Probe],
    *,
    exit_code: Callable[[], int | None],
    log_tail: Callable[[], str],
    timeout_s: float,
    console: Console,
    poll_s: float = POLL_S,
) -> float:
    """Poll ``probe`` until it passes; return the seconds it took.

    Args:
        what: the name shown to the user (``sglang-prefill at http://...``).
        probe: one check; called every ``poll_s`` seconds.
        exit_code: None while the process runs (a non-None value ends the wait at once).
        log_tail: the last lines of its log, for the error.
        timeout_s: the deadline, from now.
        console: where progress is shown.
        poll_s: pause between checks.

    Raises:
        ReadinessError: it exited, or the deadline passed.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last = "not checked yet"
    with console.status(f"waiting for {what}") as status:
        while True:
            code = exit_code()
            if code is not None:
                raise ReadinessError(with_log(f"{what} exited ({exit_text(code)}) before it was "
                                               "ready", log_tail()))  # fmt: skip
            result = probe()
            elapsed = time.monotonic() - start
            if result.ok:
                return elapsed
            last = result.status
            if time.monotonic() >= deadline:
                raise ReadinessError(with_log(
                    f"{what} not ready after {timeout_s:g}s (last answer: {last}); "
                    "raise READY_TIMEOUT_S if it is only slow", log_tail()))  # fmt: skip
            status.update(f"waiting for {what}: {elapsed:.0f}s, last answer: {last}")
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def wait_server_ready(
    runtime: Runtime, spec: ServerSpec, *, timeout_s: float, console: Console
) -> float:
    """Wait until ``spec`` answers ``/health_generate`` with 200; return the seconds it took.

    Raises:
        ReadinessError: it exited first (with its exit code and log tail), or the deadline passed.
    """
    url = f"{spec.url}/health_generate"
    return wait_until(
        f"{spec.name} at {spec.url}",
        lambda: http_probe(url, timeout_s=min(10.0, timeout_s)),
        exit_code=lambda: runtime.exit_code(spec),
        log_tail=lambda: runtime.log_tail(spec, LOG_LINES),
        timeout_s=timeout_s,
        console=console,
    )


def exit_text(code: int) -> str:
    if code < -999:
        return "exit code unknown"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def with_log(message: str, log: str) -> str:
    if not log.strip():
        return f"{message}; its log is empty"
    indented = "\n".join(f"  | {line}" for line in log.splitlines())
    return f"{message}; last log lines:\n{indented}"
