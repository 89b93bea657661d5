"""One long-lived process that runs SGLang's bench client for every point of a sweep.

Importing ``sglang.benchmark.serving`` costs about 10 s here (torch and friends), so a sweep that
started ``python -m sglang.benchmark.serving`` per point would pay it per point. The worker
(``python -m sglbench.execute.client_worker``) imports it once and then runs the client's own
``cli_main`` per point with that point's command line, so the flags are parsed by the client's
own argparse parser exactly as on the command line (and ``--rust-client`` is checked the same way).

Protocol, one JSON object per line: the parent writes ``{"argv": [...], "log": path, "hooks":
bool, "arrivals": {...} | null}`` on the worker's stdin; the worker answers on a private copy of
its original stdout with ``{"event": "ready", ...}`` once, then per point one ``{"event":
"done", ...}``. With ``hooks``, the worker also sends ``{"event": "warmed"}`` at the client's own
flush moment (after its warm-up; the parent then flushes every worker and scrapes /metrics) and
``{"event": "measured"}`` when the last request has finished (the parent scrapes again), and
waits for one line of answer on stdin after each, so the scrapes bracket exactly the measured
requests. Everything the client prints (fd 1 and 2, also from native code) goes to the point's
log file, never into the protocol.

Lateness: the client's request generator is wrapped (``sglbench.execute.arrivals``) to record
when each request was meant to go and when it went; with ``arrivals`` (BENCH_BURSTINESS) our own
gamma schedule replaces the client's Poisson one. The figures come back in ``done``.

Client CPU use is measured inside the worker with psutil over the client's request phase (the
span it reports as ``duration``), because the setup around it (tokenizer load, dataset
generation, retokenizing for metrics) is CPU-bound and a fixed 1 s pause idles: either would
skew the figure on short points. The Rust client runs the whole point in native code, so there
the whole call is measured (phase ``whole``). The share of the whole host's CPU that was busy
over the same span is reported too: a saturated host starves the load generator even when the
client itself is far from one core. The client's tokenizer is loaded once per worker.

At end of input the worker exits at once (``os._exit``, after flushing): unloading torch and
the rest at interpreter exit costs a few seconds of CPU that a finished run does not need.
Before SGLang's client, the worker imports only the standard library, psutil and leaf modules
of sglbench (no settings, no pydantic): that time is on every bench's critical path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sglbench.errors import BenchError
from sglbench.execute import client_hooks as hooks
from sglbench.execute.client_check import check_argv
from sglbench.execute.logs import tail
from sglbench.types import PointPhase

WORKER_MODULE = "sglbench.execute.client_worker"
TAIL_LINES = 15  # of a client log, in an error message
_PROG = "sglang.benchmark.serving"
# Idle workers told to exit by ``close(wait=False)``: kept (not garbage collected while they
# run) and reaped by a later ``start`` or ``close`` in this process.
_EXITING: list[subprocess.Popen[str]] = []


@dataclass(frozen=True)
class PointOutcome:
    """What the worker reports for one client run."""

    ok: bool
    error: str | None
    cpu_s: float
    measured_s: float
    phase: PointPhase  # "load": the request phase only; "whole": the whole client call
    seconds: float  # the whole client call, setup included
    host_busy: float = 0.0  # share of all the host's cores busy while measured (0..1)
    lateness: dict[str, Any] | None = None  # ``record.observation.ClientLateness`` fields

    @property
    def cores(self) -> float:
        """CPU cores the client used while measured (1.0 = one core busy all the time)."""
        return self.cpu_s / self.measured_s if self.measured_s > 0 else 0.0


class PointHooks(Protocol):
    """What the parent does when the worker reaches a point's phases (see the protocol)."""

    def warmed(self) -> None:
        """The warm-up is over; the measured requests start after the client's 1 s pause."""

    def measured(self) -> None:
        """Every measured request has finished."""


class BenchWorker:
    """Parent side: start the worker, run points through it, stop it.

    Use as a context manager; ``start()`` returns at once so the import can overlap with server
    start-up, ``wait_ready()`` blocks until the client is imported.
    """

    def __init__(self, *, log: Path, env: Mapping[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.log = log
        self._env = dict(env) if env is not None else None
        self._python = python
        self._proc: subprocess.Popen[str] | None = None
        self._busy = False  # a point was sent and its answer not read yet
        self.import_s: float | None = None

    def __enter__(self) -> BenchWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, if any."""
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Spawn the worker (it starts importing the client at once)."""
        if self._proc is not None:
            return
        _reap()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self._env if self._env is not None else os.environ)
        # The worker must import this very sglbench, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with self.log.open("ab") as err:
            # Own session: a Ctrl-C on the terminal reaches only the parent, which then stops
            # the worker itself (no KeyboardInterrupt tracebacks from the client).
            self._proc = subprocess.Popen(
                [self._python, "-m", WORKER_MODULE], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, env=env, text=True,
                start_new_session=True,
            )

    def wait_ready(self) -> float:
        """Block until the client is imported; return the import time in seconds."""
        if self.import_s is not None:
            return self.import_s
        self.start()
        reply = self._read()
        if reply.get("event") != "ready":
            raise BenchError(f"bench client failed to load: {reply.get('error')}; "
                             f"see {self.log}")
        self.import_s = float(reply["import_s"])
        return self.import_s

    def run(self, argv: list[str], *, log: Path, hooks: PointHooks | None = None,
            arrivals: dict[str, float] | None = None) -> PointOutcome:
        """Run the client once with ``argv`` (its flags); its output goes to ``log``.

        Args:
            argv: the client's flags.
            log: where the client's output goes.
            hooks: called at the warm-up's end and after the last request (None: not asked).
            arrivals: ``{"burstiness": B, "seed": S}``: our gamma schedule instead of Poisson.
        """
        self.wait_ready()
        log.parent.mkdir(parents=True, exist_ok=True)
        request = {"argv": argv, "log": str(log), "hooks": hooks is not None,
                   "arrivals": arrivals}  # fmt: skip
        self._busy = True
        self._write(request)
        reply = self._read(point_log=log)
        while reply.get("event") in ("warmed", "measured"):
            if hooks is not None:
                (hooks.warmed if reply["event"] == "warmed" else hooks.measured)()
            self._write({"event": "go"})  # the worker waits for this line
            reply = self._read(point_log=log)
        self._busy = False
        return PointOutcome(
            ok=bool(reply["ok"]), error=reply.get("error"), cpu_s=float(reply["cpu_s"]),
            measured_s=float(reply["measured_s"]), phase=_phase(reply["phase"]),
            seconds=float(reply["seconds"]), host_busy=float(reply.get("host_busy", 0.0)),
            lateness=reply.get("lateness"),
        )

    def _write(self, message: Mapping[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read() reports the exit with the log

    def check(self, argv: list[str]) -> str | None:
        """None when the client's own parser accepts ``argv``, else its one-line complaint."""
        self.wait_ready()
        self._write({"check": argv})
        reply = self._read()
        error = reply.get("error")
        return str(error) if error else None

    def _read(self, point_log: Path | None = None) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line:
            reply: dict[str, Any] = json.loads(line)
            return reply
        code = self._proc.wait()
        self._proc = None
        self.import_s = None
        last = tail(point_log, TAIL_LINES) if point_log else ""
        last = last or tail(self.log, TAIL_LINES)
        raise BenchError(f"bench client process exited with code {code}; last lines:\n{last}")

    def close(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop the worker: end of input first, then SIGTERM, then SIGKILL to its process group.

        An idle worker exits at end of input at once; one still importing the client or busy
        with a point (Ctrl-C) is signalled. The worker runs in its own session, so the group
        holds whatever the client started too.

        Args:
            timeout: seconds a signalled worker gets to exit before SIGKILL.
            wait: wait for an idle worker to exit; False returns at once (a task that ends
                now need not wait while the worker's memory is freed). A worker that must be
                signalled is always waited for.
        """
        proc, self._proc = self._proc, None
        ready, self.import_s = self.import_s is not None, None
        idle, self._busy = ready and not self._busy, False
        _reap()
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        if idle and not wait:
            _EXITING.append(proc)
        elif not (idle and _exited(proc, 1.0)):
            _signal_group(proc, signal.SIGTERM)
            if not _exited(proc, timeout):
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _reap() -> None:
    """Forget the workers of ``close(wait=False)`` that have exited (reaping them)."""
    _EXITING[:] = [p for p in _EXITING if p.poll() is None]


def _exited(proc: subprocess.Popen[str], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _phase(value: object) -> PointPhase:
    return "load" if value == "load" else "whole"


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    """Signal the worker's process group (its pid: it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# ---- worker side ------------------------------------------------------------------------------

@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send fd 1 and 2 (Python and native writes) to ``log`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _run_point(serving: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    argv, log = list(request["argv"]), Path(request["log"])
    hooks.measured.clear()
    hooks.point.clear()
    hooks.point.update(hooks=bool(request.get("hooks")), arrivals=request.get("arrivals"))
    ok, error = True, None
    with _output_to(log):
        cpu0, t0, host0 = hooks.cpu_seconds(), time.monotonic(), hooks.host_idle_total()
        sys.argv = [_PROG, *argv]
        try:
            serving.cli_main()
        except SystemExit as exc:  # argparse errors and the client's own sys.exit(1)
            ok = exc.code in (None, 0)
            error = None if ok else f"the bench client exited with {exc.code}"
        except Exception as exc:
            traceback.print_exc()
            ok, error = False, f"{type(exc).__name__}: {exc}"
        cpu, seconds, host = hooks.cpu_seconds() - cpu0, time.monotonic() - t0, hooks.host_busy(
            host0)
    hooks.restore()  # a request generator an error left unfinished
    measured, schedule = hooks.measured, hooks.point.get("schedule")
    return {
        "event": "done", "ok": ok, "error": error, "seconds": seconds,
        "phase": "load" if "measured_s" in measured else "whole",
        "cpu_s": measured.get("cpu_s", cpu), "measured_s": measured.get("measured_s", seconds),
        "host_busy": measured.get("host_busy", host),
        "lateness": schedule.summary() if schedule is not None else None,
    }  # fmt: skip


def main() -> None:
    """Worker entry point: import the client once, then serve points from stdin."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints while importing go to the worker log, not the protocol
    t0 = time.monotonic()
    try:
        from sglang.benchmark import serving
    except BaseException as exc:
        traceback.print_exc()
        hooks.send(channel, {"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from None
    hooks.instrument(serving)
    import_s = time.monotonic() - t0
    print(f"sglbench: bench client worker pid {os.getpid()} imported {_PROG} in {import_s:.1f} s",
          file=sys.stderr, flush=True)
    hooks.send(channel, {"event": "ready", "import_s": import_s, "pid": os.getpid()})
    hooks.channel.append(channel)
    # readline, not iteration: the hooks read their answers from the same stdin mid-point.
    while line := sys.stdin.readline():
        if line.strip():
            request = json.loads(line)
            if "check" in request:  # arguments only: see sglbench.execute.client_check
                hooks.send(channel, {"event": "checked",
                                     "error": check_argv(serving, list(request["check"]))})
                continue
            hooks.send(channel, _run_point(serving, request))
    # End of input: the parent is done. Skip the interpreter's teardown (unloading torch and
    # friends takes a second or more) so that the parent, waiting for this exit, is not kept.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
