"""The server tasks for real on the simulator: agg, prefill, decode, pd-router (foreground and
--detach, the Rust router), status, logs, down; afterwards no process of ours is left.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sglbench.execute.process import ProcessRuntime
from sglbench.settings import KEYS, Settings, load_settings
from tests.conftest import REPO, alive, free_port, http_status, offline_env

pytestmark = pytest.mark.integration

INVOKE = [sys.executable, "-m", "invoke"]


class Project:
    """One checkout's settings file on free loopback ports, and invoke commands against it."""

    def __init__(self, tmp: Path, tokenizer_dir: Path) -> None:
        """Write the settings file; nothing starts yet."""
        self.env_file = tmp / "test.env"
        self.env_file.write_text(
            "SIMULATE=true\nRUNTIME=process\nSERVER_BIND_HOST=127.0.0.1\nROUTER_BIND_HOST=127.0.0.1\n"
            "AGG_HOST=127.0.0.1\nPREFILL_HOST=127.0.0.1\nDECODE_HOST=127.0.0.1\n"
            f"AGG_PORT={free_port()}\nPREFILL_PORT={free_port()}\nDECODE_PORT={free_port()}\n"
            f"ROUTER_PORT={free_port()}\nROUTER_PROMETHEUS_PORT={free_port()}\n"
            f"BOOTSTRAP_PORT={free_port()}\nRUN_DIR={tmp / 'run'}\nREADY_TIMEOUT_S=60\n"
            f"SIM_ARGS=--sim-tokenizer-cache {tokenizer_dir}\n"
        )
        self.settings: Settings = load_settings(self.env_file, {}).settings
        self.env = {k: v for k, v in offline_env().items() if k not in KEYS and "SGLBENCH" not in k}
        self.env["SGLBENCH_ENV_FILE"] = str(self.env_file)

    def invoke(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``invoke ARGS`` to completion."""
        return subprocess.run([*INVOKE, *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    def ok(self, *args: str) -> str:
        """Run ``invoke ARGS``; it must succeed; its stdout."""
        done = self.invoke(*args)
        assert done.returncode == 0, f"invoke {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def pids(self) -> dict[str, int]:
        """name -> pid of every pid file."""
        return {r.name: r.pid for r in ProcessRuntime(self.settings).records()}


@pytest.fixture
def project(tmp_path: Path, tokenizer_dir: Path) -> Iterator[Project]:
    """A project whose servers are all stopped at the end, also when the test fails."""
    proj = Project(tmp_path, tokenizer_dir)
    try:
        yield proj
    finally:
        runtime = ProcessRuntime(proj.settings)
        for record in runtime.records():
            runtime.stop_name(record.name)


def test_agg_up_status_logs_down(project: Project) -> None:
    start = time.monotonic()
    out = project.ok("agg")
    url = f"http://127.0.0.1:{project.settings.agg_port}"
    assert f"sglang-agg ready at {url}" in out
    assert http_status(f"{url}/health_generate") == 200
    pid = project.pids()["sglang-agg"]

    status = project.ok("status")
    assert "sglang-agg" in status and "running" in status and f"pid {pid}" in status
    assert "[sim]" in project.ok("logs", "agg")

    # Starting it again while it runs is refused (it belongs to a live run) and changes nothing;
    # once that run is stopped by its id, it starts anew.
    again = project.invoke("agg")
    run_id = re.search(r"is held by run (\S+) \(invoke agg", again.stderr)
    assert again.returncode == 1 and run_id, again.stderr
    assert f"`invoke down --run {run_id[1]}`" in again.stderr and alive(pid)
    assert "stopped sglang-agg" in project.ok("down", "--run", run_id[1])
    project.ok("agg")
    new_pid = project.pids()["sglang-agg"]
    assert new_pid != pid and not alive(pid)

    follow = subprocess.Popen([*INVOKE, "logs", "agg", "--follow"], cwd=REPO, env=project.env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert "stopped sglang-agg" in project.ok("down")
        # `logs --follow` ends by itself once the server has stopped, with its last words.
        followed, _ = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0 and "[sim] ready" in followed
    assert not alive(new_pid) and http_status(f"{url}/health") is None
    assert "nothing of ours" in project.ok("status")
    assert time.monotonic() - start < 60


def test_pd_with_the_rust_router_foreground_then_detached(project: Project) -> None:
    s = project.settings
    project.ok("prefill")
    # The router needs both workers: with decode missing it says so and starts nothing.
    no_decode = project.invoke("pd-router", "--detach")
    assert no_decode.returncode == 2
    assert no_decode.stderr.startswith("error: DECODE_HOST/DECODE_PORT: decode worker")
    assert "router" not in project.pids()
    project.ok("decode")

    foreground = subprocess.Popen([*INVOKE, "pd-router"], cwd=REPO, env=project.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert foreground.stdout is not None
        lines = []
        for line in foreground.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert any(f"ready at http://127.0.0.1:{s.router_port}" in line for line in lines)
        router_pid = project.pids()["router"]
        foreground.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        assert foreground.wait(30) == 0
    finally:
        foreground.kill()
        foreground.wait()
    assert not alive(router_pid) and "router" not in project.pids()

    project.ok("pd-router", "--detach")
    router = f"http://127.0.0.1:{s.router_port}"
    assert generate(router)["meta_info"]["completion_tokens"] == 4
    pids = project.pids()
    assert set(pids) == {"router", "sglang-prefill", "sglang-decode"}
    assert project.ok("status").count("running") == 3

    down = project.ok("down")
    assert down.index("stopped router") < down.index("stopped sglang-prefill")
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert project.pids() == {}


def test_a_server_that_dies_while_starting_fails_at_once_with_its_log(project: Project) -> None:
    start = time.monotonic()
    # A flag the server rejects: it exits with status 2 during startup.
    done = project.invoke("agg", "--set", "AGG_EXTRA_ARGS=--chunked-prefill-size x")
    assert done.returncode == 1
    assert done.stderr.startswith("error: sglang-agg at http://127.0.0.1:")
    assert "exited (exit code 2) before it was ready; last log lines:" in done.stderr
    assert "  | " in done.stderr and "--chunked-prefill-size" in done.stderr  # its complaint
    assert time.monotonic() - start < 30
    assert project.pids() == {}


def generate(base_url: str) -> dict[str, object]:
    """One small /generate request through ``base_url``."""
    params = {"max_new_tokens": 4, "ignore_eos": True}
    body = json.dumps({"text": "hello", "sampling_params": params}).encode()
    request = urllib.request.Request(f"{base_url}/generate", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, object] = json.loads(response.read())
    return result
