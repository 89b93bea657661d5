"""Shared fixtures: free ports, the offline tokenizer, and simulator processes that always stop.

A simulator started here is a real ``python -m sglbench.sim`` subprocess on loopback; readiness
is polled on ``/health_generate`` with a deadline (no sleeps), and the process is stopped when
the test ends, also when it fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from sglbench.execute.http import http_get
from sglbench.sim.tokenizer import ensure_offline_tokenizer

REPO = Path(__file__).resolve().parents[1]
# Real GH200 runs, kept beside the checkout in shared/ (also in CI). Missing locally: those tests
# skip with the reason; missing in CI (CI=true): they run and fail, so CI can never skip them.
REFERENCE = Path(os.environ.get("SGLBENCH_REFERENCE_RESULTS",
                                REPO.parent / "shared" / "reference-results"))  # fmt: skip
needs_reference = pytest.mark.skipif(
    not any(REFERENCE.glob("*.jsonl")) and not os.environ.get("CI"),
    reason=f"no results in {REFERENCE} (set SGLBENCH_REFERENCE_RESULTS)",
)
READY_TIMEOUT_S = 60.0


# Every *_PORT key a loopback run listens on.
PORT_KEYS = ("AGG_PORT", "PREFILL_PORT", "DECODE_PORT", "BOOTSTRAP_PORT", "ROUTER_PORT",
             "ROUTER_PROMETHEUS_PORT")  # fmt: skip


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 a moment ago (held together while chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 a moment ago (worker i of a
    role listens on PORT+i)."""
    rng = random.Random()
    # Below the kernel's ephemeral range (32768-60999 by default): a port there can be taken as
    # the local end of some outbound connection between the check and the server's bind.
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low = int(ephemeral[0])
    for _ in range(500):
        base = rng.randint(10000, max(10001, low - count - 1))
        with ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    return free_ports(1)[0]


def loopback_ports() -> dict[str, int]:
    """Each of ``PORT_KEYS`` with its own free port."""
    return dict(zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True))


def listening(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def offline_env() -> dict[str, str]:
    """The environment for child processes: no hub access, this checkout importable."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    return http_get(url, timeout_s=timeout).status


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has stopped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Proc:
    """A child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    extra: dict[str, int] = field(default_factory=dict)

    def log_text(self) -> str:
        """The process's combined stdout/stderr so far."""
        return self.log.read_text("utf-8", errors="replace")

    def wait_ready(self, path: str = "/health_generate", timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``url + path`` until 200; fail with the log if it exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.log_text()}")
            if http_status(self.url + path) == 200:
                return
            time.sleep(0.05)  # poll interval, not a readiness guess
        pytest.fail(f"{self.name} not ready within {timeout:.0f} s:\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Procs:
    """Starts processes for one test and stops all of them at the end."""

    def __init__(self, tmp: Path, tokenizer_dir: Path) -> None:
        """Logs go to ``tmp``; simulators use the offline tokenizer in ``tokenizer_dir``."""
        self.tmp = tmp
        self.tokenizer_dir = tokenizer_dir
        self.started: list[Proc] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def spawn(self, name: str, argv: Sequence[str], url: str = "") -> Proc:
        """Start ``argv`` with its output in ``<tmp>/<name>.log``."""
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, env=offline_env(), cwd=REPO
            )
        proc = Proc(name=name, popen=popen, log=log, url=url)
        self.started.append(proc)
        return proc

    def sim(self, *args: str, name: str = "sim", wait: bool = True) -> Proc:
        """Start ``python -m sglbench.sim`` on a free port (``args`` added to the command)."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "sglbench.sim",
            "--port",
            str(port),
            "--sim-tokenizer-cache",
            str(self.tokenizer_dir),
            *args,
        ]
        proc = self.spawn(name, argv, url=f"http://127.0.0.1:{port}")
        proc.extra["port"] = port
        if wait:
            proc.wait_ready()
        return proc

    def stop_all(self) -> None:
        """Stop everything, newest first."""
        for proc in reversed(self.started):
            proc.stop()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline Qwen2.5 tokenizer, built once per test session in a temporary directory."""
    return ensure_offline_tokenizer(tmp_path_factory.mktemp("tokenizer") / "qwen2.5")


@pytest.fixture
def procs(tmp_path: Path, tokenizer_dir: Path) -> Iterator[Procs]:
    """Process starter for one test; everything it started is stopped afterwards."""
    with Procs(tmp_path, tokenizer_dir) as started:
        yield started


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Iterator[Procs]:
    """Like ``procs`` but shared by the tests of one module (one simulator for many tests)."""
    with Procs(tmp_path_factory.mktemp("procs"), tokenizer_dir) as started:
        yield started


def run_bench_client(
    base_url: str, tokenizer: Path, out: Path, *extra: str, timeout: float = 240.0
) -> dict[str, Any]:
    """Run SGLang's real bench client (``sglang.benchmark.serving``) once; its JSONL row.

    ``--output-details`` adds the per-request lists (``ttfts``, ``itls``, ``output_lens``).
    """
    argv = [sys.executable, "-m", "sglang.benchmark.serving", "--base-url", base_url,
            "--dataset-name", "random-ids", "--random-range-ratio", "1.0",
            "--tokenizer", str(tokenizer), "--output-file", str(out), "--output-details",
            "--disable-tqdm", "--seed", "1", *extra]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=offline_env())
    if done.returncode != 0 or not out.exists():
        pytest.fail(f"bench client failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                    f"{done.stderr[-4000:]}")  # fmt: skip
    row: dict[str, Any] = json.loads(out.read_text("utf-8").splitlines()[-1])
    return row


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The ``--sim-trace`` records of a simulator, in arrival order."""
    records = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    return sorted(records, key=lambda r: float(r["arrival"]))
