"""``run_bench`` with SGLang's real bench client against the simulator (agg) and the real router.

Small workloads (16 prompts, 64 in, 16 out) keep each client run under a few seconds; the
client's ~10 s import is paid once per ``run_bench`` call, also for a two-point sweep.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from sglbench.errors import BenchError
from sglbench.execute import deploy
from sglbench.execute.bench import run_bench
from sglbench.execute.client_worker import BenchWorker
from sglbench.execute.target import Target, detect_pd, detect_target
from sglbench.plan.servers import server_specs
from sglbench.settings import Settings, load_settings
from tests.conftest import REPO, Procs, loopback_ports

pytestmark = pytest.mark.integration

SMALL_WORKLOAD = {
    "SIMULATE": "true", "RUNTIME": "process", "BENCH_DATASET": "random-ids",
    "BENCH_NUM_PROMPTS": "16", "BENCH_INPUT_LEN": "64", "BENCH_OUTPUT_LEN": "16",
    "BENCH_RANGE_RATIO": "1", "BENCH_MAX_CONCURRENCY": "4,8", "READY_TIMEOUT_S": "120",
    "IB_DEVICE": "",
}  # fmt: skip


def loopback_settings(tmp_path: Path, **keys: str) -> Settings:
    """Settings for a run on 127.0.0.1 with free ports and files under ``tmp_path``."""
    hosts = {k: "127.0.0.1" for k in ("AGG_HOST", "PREFILL_HOST", "DECODE_HOST", "ROUTER_HOST",
                                      "SERVER_BIND_HOST", "ROUTER_BIND_HOST")}
    ports = {k: str(p) for k, p in loopback_ports().items()}
    files = {"RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run")}
    return load_settings(None, {}, {**SMALL_WORKLOAD, **hosts, **ports, **files, **keys}).settings


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub; servers started by lifecycle import this checkout."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def rows(path: Path) -> list[dict[str, Any]]:
    """The JSONL rows of a results file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recording_console() -> tuple[Console, io.StringIO]:
    """A console whose output the test can read."""
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def worker_imports(log: Path) -> list[str]:
    """The 'imported' lines of the client worker log: one per client process started."""
    return re.findall(r"bench client worker pid (\d+) imported", log.read_text())


def test_bench_finds_the_agg_server_and_sweeps_in_one_client_process(
    procs: Procs, tmp_path: Path, tokenizer_dir: Path
) -> None:
    sim = procs.sim("--host", "127.0.0.1")
    settings = loopback_settings(tmp_path, AGG_PORT=str(sim.extra["port"]),
                                 TOKENIZER_PATH=str(tokenizer_dir))  # fmt: skip
    console, out = recording_console()

    planned = run_bench(settings, tag="agg_sim", dry_run=True, console=console)
    shown = out.getvalue().splitlines()
    commands = [line for line in shown if "python -m sglang.benchmark.serving" in line]
    assert len(commands) == 2  # one line per sweep point
    assert all(f"--base-url {sim.url}" in c and "--pd-separated" not in c for c in commands)
    assert any(line.startswith("# a router answering at ROUTER_HOST:ROUTER_PORT") for line in shown)
    assert not planned.exists()

    path = run_bench(settings, tag="agg_sim", console=console)
    assert path == Path(settings.results_dir) / "agg_sim.jsonl"
    got = rows(path)
    assert [r["tag"] for r in got] == ["agg_sim_in64_out16_c4_rinf", "agg_sim_in64_out16_c8_rinf"]
    for row in got:
        assert row["completed"] == 16
        assert row["total_output_tokens"] == 16 * 16  # EOS ignored: every output is full length
        assert row["server_info"]["disaggregation_mode"] == "null"
    assert "agg server" in out.getvalue() and "agg_sim_in64_out16_c8_rinf" in out.getvalue()
    assert len(worker_imports(Path(settings.run_dir) / "bench" / "client-worker.log")) == 1


def test_bench_detects_pd_behind_the_router(tmp_path: Path) -> None:
    """Detection only (a dry run never probes); compare runs the PD client."""
    settings = loopback_settings(tmp_path, BENCH_MAX_CONCURRENCY="8")
    console, _ = recording_console()
    try:
        url = deploy.up_mode(settings, settings.topology("pd"), run_id="test-bench-pd",
                             console=console)
        prefill = server_specs(settings, "prefill")[0].url
        assert detect_pd(url) and detect_pd(prefill)
        assert detect_target(settings, None, "auto") == Target(url, True, "router")
    finally:
        deploy.down(settings, console)


def test_bench_with_nothing_running_says_what_to_start(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path)
    with pytest.raises(BenchError, match=r"nothing answers .*invoke agg"):
        run_bench(settings, tag="x", console=recording_console()[0])
    assert not (Path(settings.results_dir) / "x.jsonl").exists()


def test_a_failing_server_gives_a_bench_error_with_the_clients_last_lines(
    procs: Procs, tmp_path: Path, tokenizer_dir: Path
) -> None:
    sim = procs.sim("--host", "127.0.0.1", "--sim-fail-rate", "1.0", wait=False)
    sim.wait_ready("/health")
    settings = loopback_settings(tmp_path, BENCH_MAX_CONCURRENCY="4",
                                 TOKENIZER_PATH=str(tokenizer_dir))  # fmt: skip
    with pytest.raises(BenchError) as err:
        run_bench(settings, tag="broken", base_url=sim.url, mode="agg",
                  console=recording_console()[0])  # fmt: skip
    message = str(err.value)
    assert message.startswith("point broken: ")
    assert "Warmup failed" in message  # the client's own words, from its log
    assert not (Path(settings.results_dir) / "broken.jsonl").exists()


def test_rust_load_generator_is_selected_by_a_setting(
    procs: Procs, tmp_path: Path, tokenizer_dir: Path
) -> None:
    sim = procs.sim("--host", "127.0.0.1")
    settings = loopback_settings(tmp_path, AGG_PORT=str(sim.extra["port"]),
                                 TOKENIZER_PATH=str(tokenizer_dir), BENCH_RUST_CLIENT="true",
                                 BENCH_MAX_CONCURRENCY="8")  # fmt: skip
    console, out = recording_console()
    run_bench(settings, tag="agg_rust", dry_run=True, console=console)
    assert "--rust-client" in out.getvalue()

    (row,) = rows(run_bench(settings, tag="agg_rust", console=console))
    assert row["tag"] == "agg_rust" and row["completed"] == 16
    assert row["total_output_tokens"] == 16 * 16
    assert row["mean_ttft_ms"] > 0 and row["mean_itl_ms"] > 0
    # Only sglang 0.5.23's Rust client prints this; its Python client has no worker threads.
    assert "worker threads" in (Path(settings.run_dir) / "bench" / "agg_rust.log").read_text()


def test_closing_a_busy_worker_stops_its_whole_process_group(tmp_path: Path) -> None:
    """A worker stuck in a point (it ignores end of input) is stopped with all it started."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path / 'child.pid'}\nexec sleep 300\n")
    fake.chmod(0o755)
    worker = BenchWorker(log=tmp_path / "worker.log", python=str(fake))
    worker.start()
    leader = psutil.Process(worker.pid)
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval
    child = psutil.Process(int((tmp_path / "child.pid").read_text()))
    try:
        worker.close(timeout=5.0)
        _gone, alive = psutil.wait_procs([leader, child], timeout=5)
        assert alive == [] and worker.pid is None
    finally:
        for proc in (leader, child):
            with contextlib.suppress(psutil.Error):
                proc.kill()
