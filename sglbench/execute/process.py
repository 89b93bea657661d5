"""The ``process`` runtime: servers (and the router) as local processes we can always find again.

Each process gets its own session (so its whole process group can be stopped), a log file and a
JSON pid file under ``RUN_DIR``. A pid file is the only way anything here touches a process: a
process without one, or whose creation time differs from the recorded one (the pid was reused),
is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from sglbench.display import mask_args
from sglbench.errors import ConfigError, ServerError
from sglbench.execute.logs import log_file_lines, tail
from sglbench.execute.runtime import UNKNOWN_EXIT, Instance
from sglbench.hosts import is_loopback
from sglbench.plan.servers import Command
from sglbench.settings import Settings
from sglbench.types import ROLES, RuntimeName

# Popen objects of the processes this Python process started, by pid, shared by every
# ProcessRuntime: only a parent can learn a child's exit code and reap it (else it lingers as a
# zombie while, e.g., an experiment goes on to the next mode).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05


@dataclass(frozen=True)
class PidFile:
    """What we record about a process we started (``RUN_DIR/pids/<name>.json``)."""

    pid: int
    role: str
    name: str
    url: str
    run_id: str
    started: str  # ISO time, for people
    create_time: float  # psutil's creation time, to tell our process from a reused pid
    argv: list[str]
    log: str


def python_for(settings: Settings) -> str:
    """The interpreter that runs servers and the router: SERVER_PYTHON, else this one."""
    return settings.server_python or sys.executable


class ProcessRuntime:
    """Start, watch and stop local processes by name, through pid files under RUN_DIR."""

    name: RuntimeName = "process"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = Path(settings.run_dir)
        self.python = python_for(settings)

    # --- the Runtime protocol ------------------------------------------------------------------

    def describe(self, spec: Command) -> str:
        """The command line the process runs (``--dry-run``)."""
        env = [f"{k}={v}" for k, v in spec.env]
        return shlex.join([*env, *mask_args(spec.argv(self.python))])

    def start(self, spec: Command, run_id: str) -> None:
        """Start a server or the router; an old instance of ours with its name is stopped first."""
        self.launch(spec.name, spec.role, spec.url, spec.argv(self.python), run_id,
                    env=dict(spec.env))  # fmt: skip

    def exit_code(self, spec: Command) -> int | None:
        """None while it runs; its exit code (or ``UNKNOWN_EXIT``) once it stopped."""
        return self.exit_code_of(spec.name)

    def log_tail(self, spec: Command, lines: int = 40) -> str:
        """The last ``lines`` lines of its log."""
        return self.log_tail_of(spec.name, lines)

    def log_lines(self, spec: Command, follow: bool = False) -> Iterator[str]:
        """Its log line by line; with ``follow``, until it stops or the caller stops iterating."""
        return self.follow_log(spec.name, follow=follow)

    def stop(self, spec: Command) -> bool:
        """Stop it (process group: SIGTERM, then SIGKILL after a deadline) if it is ours."""
        return self.stop_name(spec.name)

    def instances(self) -> list[Instance]:
        """Everything with a pid file, running or not."""
        return [self._instance(record) for record in self.records()]

    def stop_run(self, run_id: str | None) -> list[Instance]:
        """Stop every process of ours of run ``run_id`` (None: of every run), router first."""
        records = [r for r in self.records() if run_id is None or r.run_id == run_id]
        found = []
        for record in sorted(records, key=lambda r: r.role != "router"):
            found.append(self._instance(record))
            self.stop_name(record.name)
        return found

    # --- by name ----------------------------------------------------------------------------------

    def pid_path(self, name: str) -> Path:
        """Where the pid file of ``name`` lives."""
        return self.run_dir / "pids" / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """Where the log of ``name`` goes."""
        return self.run_dir / "logs" / f"{name}.log"

    def launch(
        self, name: str, role: str, url: str, argv: Sequence[str], run_id: str,
        env: Mapping[str, str] | None = None,
    ) -> PidFile:  # fmt: skip
        """Start ``argv`` in its own session, output to its log, and write its pid file.

        ``env`` adds variables to the inherited environment.

        Raises:
            ServerError: the port of ``url`` already answers (another server would receive our
                readiness checks and traffic), ``name`` still runs for another run (it is never
                replaced: only this run's own or a stale one is), or the program cannot be
                executed.
        """
        old = self.record(name)
        if old is not None and old.run_id != run_id and _live_process(old) is not None:
            raise ServerError(f"{name} of run {old.run_id} still runs (pid {old.pid}, {old.url}); "
                              f"stop it with `invoke down --run {old.run_id}` first")
        self.stop_name(name)
        _check_local(role, url)
        _check_port_free(name, url)
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path(name).parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            try:
                proc = subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, env=self._env(env or {}),
                )  # fmt: skip
            except OSError as exc:
                raise ServerError(f"{name}: cannot run {argv[0]}: {exc.strerror}; "
                                  "check SERVER_PYTHON") from None
        _CHILDREN[proc.pid] = proc
        record = PidFile(
            pid=proc.pid, role=role, name=name, url=url, run_id=run_id,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            create_time=_create_time(proc.pid), argv=list(argv), log=str(log),
        )  # fmt: skip
        self.write_record(record)
        return record

    def log_tail_of(self, name: str, lines: int = 40) -> str:
        """The last ``lines`` lines of ``name``'s log."""
        return tail(self.log_path(name), lines)

    def write_record(self, record: PidFile) -> None:
        """Write a pid file atomically (a reader never sees half of it)."""
        path = self.pid_path(record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
        tmp.replace(path)

    def record(self, name: str) -> PidFile | None:
        """The pid file of ``name``, or None (missing or unreadable: not ours to touch)."""
        path = self.pid_path(name)
        try:
            return PidFile(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def records(self) -> list[PidFile]:
        """Every readable pid file, sorted by name."""
        pids = self.run_dir / "pids"
        found = (self.record(p.stem) for p in sorted(pids.glob("*.json"))) if pids.is_dir() else ()
        return [r for r in found if r is not None]

    def exit_code_of(self, name: str) -> int | None:
        """None while ``name`` runs; its exit code once it stopped (never started: UNKNOWN_EXIT)."""
        record = self.record(name)
        if record is None:
            return UNKNOWN_EXIT
        child = _child(record)
        if child is not None:
            return child.poll()
        return UNKNOWN_EXIT if _live_process(record) is None else None

    def stop_name(self, name: str) -> bool:
        """Stop ``name`` if its pid file says it is ours and it runs; remove its pid file."""
        record = self.record(name)
        if record is None:
            return False
        proc = _live_process(record)
        child = _child(record)
        stopped = False
        if proc is not None:
            _terminate_tree(proc, child)
            stopped = True
        elif child is not None:
            child.poll()  # reap it
        self.pid_path(name).unlink(missing_ok=True)
        return stopped

    def follow_log(self, name: str, *, follow: bool) -> Iterator[str]:
        """Lines of ``name``'s log; with ``follow``, keep reading until the process stops."""
        return log_file_lines(self.log_path(name), follow=follow,
                              ended=lambda: self.exit_code_of(name) is not None)

    def _instance(self, record: PidFile) -> Instance:
        code = self.exit_code_of(record.name)
        return Instance(name=record.name, role=record.role, runtime="process",
                        where=f"pid {record.pid}", url=record.url,
                        state="running" if code is None else "exited", exit_code=code,
                        run_id=record.run_id)  # fmt: skip

    def _env(self, extra: Mapping[str, str]) -> dict[str, str] | None:
        extra = dict(extra)
        if self.settings.hf_token is not None:
            # HF_TOKEN may live only in .env; servers read it from their environment.
            extra["HF_TOKEN"] = self.settings.hf_token.get_secret_value()
        return {**os.environ, **extra} if extra else None  # None: inherit as is


def _child(record: PidFile) -> subprocess.Popen[bytes] | None:
    """Our Popen of the pid file's process, if this Python process started it."""
    child = _CHILDREN.get(record.pid)
    if child is None or child.args != record.argv:
        return None
    return child


def _create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _live_process(record: PidFile) -> psutil.Process | None:
    """The process of a pid file if it still exists, is the one we started and is not a zombie."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.05:
            return None  # the pid now belongs to someone else
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return proc


def _terminate_tree(proc: psutil.Process, child: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group (or the tree), wait with a deadline, then SIGKILL what is left."""
    tree = [proc]
    with contextlib.suppress(psutil.Error):
        tree += proc.children(recursive=True)
    own_group = _pgid(proc.pid) == proc.pid
    _signal(proc, tree, own_group, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_TIMEOUT_S)
    _gone, alive = psutil.wait_procs(tree, timeout=max(0.0, deadline - time.monotonic()))
    if alive:
        _signal(proc, alive, own_group, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
    if child is not None:
        child.poll()


def _signal(leader: psutil.Process, procs: list[psutil.Process], group: bool, sig: int) -> None:
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader.pid, sig)
    for proc in procs:  # also members that left the group (setsid), found as descendants
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _check_port_free(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        in_use = sock.connect_ex((parts.hostname, parts.port)) == 0
    if in_use:
        raise ServerError(
            f"{name}: something not started by this project already listens on "
            f"{parts.hostname}:{parts.port}; stop it or choose another port (--set ...PORT=N)"
        )


def _check_local(role: str, url: str) -> None:
    """The process runtime runs everything here, so the URL host must be one of ours."""
    host = urlsplit(url).hostname or ""
    if host == "0.0.0.0" or is_loopback(host):
        return
    local = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    try:
        resolved = socket.gethostbyname(host)
    except OSError:
        resolved = host
    if host in local or resolved in local or resolved.startswith("127."):
        return
    key = role.upper()
    other = f" or use {key}_RUNTIME=docker with {key}_DOCKER_HOST" if role in ROLES else ""
    raise ConfigError(
        f"{key}_HOST={host}: the process runtime starts {role} on this machine, but {host} is "
        f"not one of its addresses; set {key}_HOST=127.0.0.1{other}"
    )
