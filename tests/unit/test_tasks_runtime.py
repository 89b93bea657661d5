"""The process runtime's pid files, stop rules and the runtime factory; readiness failures.

Processes here are tiny ``python -c`` sleepers started through the real runtime: what a user
notices is that ``down`` stops what we started (children too) and never anything else.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from sglbench.errors import ConfigError, ReadinessError, ServerError
from sglbench.execute import process as process_module
from sglbench.execute.http import Probe, http_probe
from sglbench.execute.process import PidFile, ProcessRuntime
from sglbench.execute.readiness import wait_until
from sglbench.execute.router import router_probe
from sglbench.execute.runtime import UNKNOWN_EXIT
from sglbench.execute.runtimes import runtime_for
from sglbench.plan.router import RouterSpec
from sglbench.plan.servers import server_specs
from sglbench.settings import Settings, load_settings
from tests.conftest import alive, free_port

SLEEPER = [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"]


def settings_for(tmp_path: Path, **values: str) -> Settings:
    """Loopback settings with RUN_DIR in ``tmp_path``."""
    base = {"RUN_DIR": str(tmp_path / "run"), "AGG_HOST": "127.0.0.1", "SIMULATE": "true",
            "RUNTIME": "process"}
    return load_settings(None, {}, {**base, **values}).settings


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    """A process runtime whose processes are all stopped after the test."""
    rt = ProcessRuntime(settings_for(tmp_path))
    try:
        yield rt
    finally:
        for record in rt.records():
            rt.stop_name(record.name)


def launch(rt: ProcessRuntime, name: str, argv: list[str] = SLEEPER) -> PidFile:
    """Start ``argv`` as ``name`` on a free (unused) port."""
    return rt.launch(name, "agg", f"http://127.0.0.1:{free_port()}", argv, "run-1")


def test_pid_file_records_what_status_and_down_need(runtime: ProcessRuntime) -> None:
    record = launch(runtime, "sglang-agg")
    data = json.loads(runtime.pid_path("sglang-agg").read_text())
    assert data["pid"] == record.pid and data["role"] == "agg" and data["run_id"] == "run-1"
    assert data["argv"] == SLEEPER and data["url"].startswith("http://127.0.0.1:")
    assert data["create_time"] == pytest.approx(psutil.Process(record.pid).create_time())
    assert runtime.exit_code_of("sglang-agg") is None
    [instance] = runtime.instances()
    assert (instance.name, instance.state, instance.where) == (
        "sglang-agg", "running", f"pid {record.pid}")  # fmt: skip


def test_stop_ends_the_process_group_and_removes_the_pid_file(runtime: ProcessRuntime) -> None:
    parent = [sys.executable, "-c",
              "import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print('started', flush=True); time.sleep(60)"]  # fmt: skip
    record = launch(runtime, "sglang-decode", parent)
    deadline = time.monotonic() + 20
    while not psutil.Process(record.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    [child] = psutil.Process(record.pid).children()
    assert runtime.stop_name("sglang-decode") is True
    assert not alive(record.pid) and not alive(child.pid)
    assert not runtime.pid_path("sglang-decode").exists()
    assert runtime.stop_name("sglang-decode") is False  # nothing of ours is left to stop


def test_a_process_ignoring_sigterm_is_killed_after_the_deadline(
    runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_module, "STOP_TIMEOUT_S", 0.5)
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"]  # fmt: skip
    record = launch(runtime, "stubborn", stubborn)
    deadline = time.monotonic() + 20
    while "ready" not in runtime.log_tail_of("stubborn") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.stop_name("stubborn") is True
    assert not alive(record.pid)


def test_exit_code_of_a_process_that_failed(runtime: ProcessRuntime) -> None:
    launch(runtime, "broken", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    deadline = time.monotonic() + 20
    while runtime.exit_code_of("broken") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.exit_code_of("broken") == 3
    assert runtime.log_tail_of("broken") == "boom"
    assert [i.shown_state for i in runtime.instances()] == ["exited(3)"]


def test_a_reused_pid_is_never_signalled(runtime: ProcessRuntime) -> None:
    # A pid file whose pid now belongs to another process (here: the test itself).
    me = psutil.Process(os.getpid())
    stale = PidFile(pid=me.pid, role="agg", name="sglang-agg", url="http://127.0.0.1:1",
                    run_id="old", started="", create_time=me.create_time() - 100.0,
                    argv=["python3"], log="")  # fmt: skip
    runtime.write_record(stale)
    assert runtime.exit_code_of("sglang-agg") == UNKNOWN_EXIT
    assert [i.state for i in runtime.instances()] == ["exited"]
    assert runtime.stop_name("sglang-agg") is False  # we are still alive to assert this
    assert not runtime.pid_path("sglang-agg").exists()


def test_unreadable_pid_files_are_ignored(runtime: ProcessRuntime) -> None:
    runtime.pid_path("junk").parent.mkdir(parents=True)
    runtime.pid_path("junk").write_text("{not json")
    assert runtime.records() == [] and runtime.stop_name("junk") is False


def test_a_taken_port_is_an_error_and_nothing_starts(runtime: ProcessRuntime) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServerError, match=f"already listens on 127.0.0.1:{port}"):
            runtime.launch("sglang-agg", "agg", f"http://127.0.0.1:{port}", SLEEPER, "r")
    assert runtime.records() == []


def test_a_remote_host_is_a_config_error_for_the_process_runtime(tmp_path: Path) -> None:
    rt = ProcessRuntime(settings_for(tmp_path))
    with pytest.raises(ConfigError, match=r"PREFILL_HOST=192\.0\.2\.7: the process runtime"):
        rt.launch("sglang-prefill", "prefill", "http://192.0.2.7:30000", SLEEPER, "r")
    assert rt.records() == []


def test_describe_is_the_shell_command(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, SERVER_PYTHON="/opt/py/bin/python3", AGG_PORT="30123")
    [spec] = server_specs(settings, "agg")
    line = ProcessRuntime(settings).describe(spec)
    assert line.startswith("/opt/py/bin/python3 -m sglbench.sim --model-path ")
    assert "--port 30123" in line


def test_runtime_for_picks_the_runtime_or_says_docker_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    assert isinstance(runtime_for(settings, "process"), ProcessRuntime)
    monkeypatch.setitem(sys.modules, "sglbench.execute.docker", None)  # import fails
    with pytest.raises(ConfigError, match="docker runtime is not available"):
        runtime_for(settings, "docker")


def test_readiness_fails_at_once_when_the_process_exits() -> None:
    start = time.monotonic()
    with pytest.raises(ReadinessError) as err:
        wait_until("sglang-agg at http://x", lambda: Probe(False, "503"), exit_code=lambda: 3,
                   log_tail=lambda: "line 1\nOOM", timeout_s=60,
                   console=Console(quiet=True))  # fmt: skip
    assert time.monotonic() - start < 5
    assert "exited (exit code 3) before it was ready" in str(err.value)
    assert str(err.value).endswith("  | line 1\n  | OOM")


def test_readiness_deadline_names_the_last_answer() -> None:
    with pytest.raises(ReadinessError, match=r"not ready after 0.3s \(last answer: 503\)"):
        wait_until("x", lambda: Probe(False, "503"), exit_code=lambda: None,
                   log_tail=lambda: "", timeout_s=0.3, console=Console(quiet=True))  # fmt: skip


def test_readiness_returns_once_the_probe_passes() -> None:
    answers = iter([Probe(False, "503"), Probe(False, "503"), Probe(True, "200")])
    seconds = wait_until("x", lambda: next(answers), exit_code=lambda: None, log_tail=lambda: "",
                         timeout_s=30, console=Console(quiet=True), poll_s=0.01)  # fmt: skip
    assert seconds < 5


def test_http_probe_of_a_closed_port() -> None:
    closed = f"http://127.0.0.1:{free_port()}/health"
    assert http_probe(closed) == Probe(False, "connection refused")


def test_router_probe_shows_why_a_rust_router_is_not_ready_yet() -> None:
    answers = iter([(503, {"reason": "insufficient healthy workers"}),
                    (200, {"healthy_workers": 1}), (200, {"healthy_workers": 2})])  # fmt: skip

    class Readiness(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = next(answers)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Readiness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = RouterSpec(name="router", role="router", impl="rust", module="m", args=(),
                          host="127.0.0.1", port=server.server_address[1], workers=2)
        shown = [router_probe(spec, expected_workers=2) for _ in range(3)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert shown == [Probe(False, "503 insufficient healthy workers"),
                     Probe(False, "1/2 workers registered"), Probe(True, "200")]  # fmt: skip
