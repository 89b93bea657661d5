"""One long-lived process that runs SGLang's bench client for every point of a sweep.

Importing ``sglang.benchmark.serving`` costs about 10 s here (torch and friends), so a sweep that
started ``python -m sglang.benchmark.serving`` per point would pay it per point. The worker
(``python -m sglbench.execute.client_worker``) imports it once and then runs the client's own
``cli_main`` per point with that point's command line, so the flags are parsed by the client's
own argparse parser exactly as on the command line (and ``--rust-client`` is checked the same way).

Protocol, one JSON object per line: the parent writes ``{"argv": [...], "log": path}`` on the
worker's stdin; the worker answers on a private copy of its original stdout with ``{"event":
"ready", ...}`` once, then one ``{"event": "done", ...}`` per point. Everything the client prints
(fd 1 and 2, also from native code) goes to the point's log file, never into the protocol.

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
import functools
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
from typing import IO, Any

import psutil

from sglbench.errors import BenchError
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

    @property
    def cores(self) -> float:
        """CPU cores the client used while measured (1.0 = one core busy all the time)."""
        return self.cpu_s / self.measured_s if self.measured_s > 0 else 0.0


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

    def run(self, argv: list[str], *, log: Path) -> PointOutcome:
        """Run the client once with ``argv`` (its flags); its output goes to ``log``."""
        self.wait_ready()
        assert self._proc is not None and self._proc.stdin is not None
        log.parent.mkdir(parents=True, exist_ok=True)
        self._busy = True
        try:
            self._proc.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read() reports the exit with the log
        reply = self._read(point_log=log)
        self._busy = False
        return PointOutcome(
            ok=bool(reply["ok"]), error=reply.get("error"), cpu_s=float(reply["cpu_s"]),
            measured_s=float(reply["measured_s"]), phase=_phase(reply["phase"]),
            seconds=float(reply["seconds"]), host_busy=float(reply.get("host_busy", 0.0)),
        )

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

_measured: dict[str, float] = {}


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _host_idle_total() -> tuple[float, float]:
    """(idle, total) CPU seconds of the whole host, every core."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(idle), float(sum(times))


def _host_busy(before: tuple[float, float]) -> float:
    idle, total = _host_idle_total()
    span = total - before[1]
    return 1.0 - (idle - before[0]) / span if span > 0 else 0.0


def _instrument(serving: Any) -> None:
    """Hook the client's own functions to measure its request phase and reuse its tokenizer.

    The request phase starts when ``benchmark()`` creates its request generator
    (``get_request``) and ends when it calls ``calculate_metrics``, exactly the span the client
    reports as ``duration``; the warm-up, a fixed 1 s pause and the retokenizing metrics around
    it would skew the CPU share either way. The tokenizer load (about 5 s for Qwen's with
    transformers 5) is paid once per worker instead of once per point.
    """
    get_request = getattr(serving, "get_request", None)
    calculate_metrics = getattr(serving, "calculate_metrics", None)
    get_tokenizer = getattr(serving, "get_tokenizer", None)
    if get_request is not None and calculate_metrics is not None:

        def start_requests(*args: Any, **kwargs: Any) -> Any:
            idle, total = _host_idle_total()
            _measured.update(cpu0=_cpu_seconds(), t0=time.perf_counter(), idle0=idle,
                             total0=total)
            return get_request(*args, **kwargs)

        def end_requests(*args: Any, **kwargs: Any) -> Any:
            if "t0" in _measured:
                _measured.update(
                    cpu_s=_cpu_seconds() - _measured["cpu0"],
                    measured_s=time.perf_counter() - _measured["t0"],
                    host_busy=_host_busy((_measured["idle0"], _measured["total0"])))
            return calculate_metrics(*args, **kwargs)

        # run_benchmark()/benchmark() look these up in their module's globals at call time.
        serving.get_request = start_requests
        serving.calculate_metrics = end_requests
    if get_tokenizer is not None:
        serving.get_tokenizer = functools.lru_cache(maxsize=4)(get_tokenizer)


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


def _run_point(serving: Any, argv: list[str], log: Path) -> dict[str, Any]:
    _measured.clear()
    ok, error = True, None
    with _output_to(log):
        cpu0, t0, host0 = _cpu_seconds(), time.monotonic(), _host_idle_total()
        sys.argv = [_PROG, *argv]
        try:
            serving.cli_main()
        except SystemExit as exc:  # argparse errors and the client's own sys.exit(1)
            ok = exc.code in (None, 0)
            error = None if ok else f"the bench client exited with {exc.code}"
        except Exception as exc:
            traceback.print_exc()
            ok, error = False, f"{type(exc).__name__}: {exc}"
        cpu, seconds, host = _cpu_seconds() - cpu0, time.monotonic() - t0, _host_busy(host0)
    phase = "load" if "measured_s" in _measured else "whole"
    return {
        "event": "done", "ok": ok, "error": error, "seconds": seconds, "phase": phase,
        "cpu_s": _measured.get("cpu_s", cpu), "measured_s": _measured.get("measured_s", seconds),
        "host_busy": _measured.get("host_busy", host),
    }


def _send(channel: IO[str], message: Mapping[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def main() -> None:
    """Worker entry point: import the client once, then serve points from stdin."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints while importing go to the worker log, not the protocol
    t0 = time.monotonic()
    try:
        from sglang.benchmark import serving
    except BaseException as exc:
        traceback.print_exc()
        _send(channel, {"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from None
    _instrument(serving)
    import_s = time.monotonic() - t0
    print(f"sglbench: bench client worker pid {os.getpid()} imported {_PROG} in {import_s:.1f} s",
          file=sys.stderr, flush=True)
    _send(channel, {"event": "ready", "import_s": import_s, "pid": os.getpid()})
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            _send(channel, _run_point(serving, list(request["argv"]), Path(request["log"])))
    # End of input: the parent is done. Skip the interpreter's teardown (unloading torch and
    # friends takes a second or more) so that the parent, waiting for this exit, is not kept.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
