"""``compare`` on the simulator: agg and PD swept with the real client, router and deploy.

Also the user's Ctrl-C: ``invoke compare`` interrupted after its first point keeps that point,
stops everything it started, and ``--resume`` measures exactly the missing points.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from sglbench.execute import deploy
from sglbench.execute.compare import compare
from sglbench.execute.http import http_get
from sglbench.plan.servers import server_specs
from sglbench.settings import Settings, display_value
from tests.conftest import REPO, offline_env
from tests.integration.test_bench import (
    loopback_settings,
    recording_console,
    rows,
    worker_imports,
)

pytestmark = pytest.mark.integration

SECRET = "hf_compareTESTsecret42"
TAGS = {
    "agg": ["agg_in64_out16_c4_rinf", "agg_in64_out16_c8_rinf"],
    "pd": ["pd_in64_out16_c4_rinf", "pd_in64_out16_c8_rinf"],
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub; servers started by lifecycle import this checkout."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def server_urls(settings: Settings) -> list[str]:
    """Every URL a run of these settings serves on (workers and router)."""
    urls = [s.url for role in ("agg", "prefill", "decode") for s in server_specs(settings, role)]
    return [*urls, f"http://{settings.router_host}:{settings.router_port}"]


def answers(url: str) -> bool:
    """True when something answers HTTP at ``url``."""
    return http_get(url + "/health", timeout_s=1.0).status is not None


def assert_nothing_left(settings: Settings, run_dir: Path) -> None:
    """No server, router or client worker of this run is alive, and no port answers."""
    assert [i for i in deploy.status(settings) if i.state == "running"] == []
    assert [u for u in server_urls(settings) if answers(u)] == []
    for pid in worker_imports(run_dir / "logs" / "client-worker.log"):
        alive = psutil.pid_exists(int(pid)) and psutil.Process(int(pid)).status() != "zombie"
        assert not alive, f"client worker {pid} still running"


def metadata(run_dir: Path) -> dict[str, Any]:
    """The run's metadata.json."""
    data: dict[str, Any] = json.loads((run_dir / "metadata.json").read_text())
    return data


def test_compare_sweeps_both_modes_with_one_workload(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path, HF_TOKEN=SECRET)
    console, out = recording_console()
    run_dir = compare(settings, modes=["agg", "pd"], console=console)

    agg, pd = rows(run_dir / "agg.jsonl"), rows(run_dir / "pd.jsonl")
    assert [r["tag"] for r in agg] == TAGS["agg"] and [r["tag"] for r in pd] == TAGS["pd"]
    assert all(r["completed"] == 16 for r in agg + pd)
    # Fairness: the same seed and lengths give both modes the very same prompts.
    assert [r["total_input_tokens"] for r in agg] == [r["total_input_tokens"] for r in pd]
    meta = metadata(run_dir)
    assert meta["workload"]["num_prompts"] == 16 and meta["simulated"] is True
    assert {m["name"]: m["gpus"] for m in meta["modes"]} == {"agg": 1, "pd": 2} and meta["ended"]
    assert {k: v.get("disaggregation_mode") for k, v in meta["servers"].items()} == {
        "agg": "null", "prefill": "prefill", "decode": "decode"}
    assert [p["tag"] for p in meta["points"]] == TAGS["agg"] + TAGS["pd"]
    assert all(p["status"] == "ok" and p["client_cpu_cores"] > 0 for p in meta["points"])
    assert SECRET not in (run_dir / "metadata.json").read_text()
    assert len(worker_imports(run_dir / "logs" / "client-worker.log")) == 1
    assert "agg_in64_out16_c8_rinf" in out.getvalue()  # the table at the end
    assert_nothing_left(settings, run_dir)


def env_file(settings: Settings, path: Path) -> Path:
    """The settings as a .env file, for ``invoke compare`` in a subprocess."""
    dumped = settings.model_dump(by_alias=True)
    keep = ("SIMULATE", "RUNTIME", "IB_DEVICE", "READY_TIMEOUT_S", "RESULTS_DIR", "RUN_DIR")
    lines = [f"{k}={display_value(k, v)}" for k, v in dumped.items()
             if k.startswith(("BENCH_", "AGG_", "PREFILL_", "DECODE_", "ROUTER_", "BOOTSTRAP"))
             or k in keep or k.endswith("BIND_HOST")]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(predicate: Any, what: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"invoke compare exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)  # poll interval


def run_dirs(settings: Settings) -> list[Path]:
    """Run directories under RESULTS_DIR."""
    root = Path(settings.results_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_ctrl_c_keeps_finished_points_and_resume_measures_only_the_rest(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path)
    env = {**offline_env(), "SGLBENCH_ENV_FILE": str(env_file(settings, tmp_path / "run.env"))}
    invoke = str(Path(sys.executable).with_name("invoke"))
    with (tmp_path / "invoke.log").open("wb") as log:
        proc = subprocess.Popen([invoke, "compare"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        def first_point_done() -> bool:
            dirs = run_dirs(settings)
            return bool(dirs) and (dirs[0] / "agg.jsonl").exists() and \
                len(rows(dirs[0] / "agg.jsonl")) >= 1

        wait_for(first_point_done, "first agg point", proc, timeout=180)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = run_dirs(settings)[0]
    kept = (run_dir / "agg.jsonl").read_text()
    assert metadata(run_dir)["interrupted"] is True
    assert_nothing_left(settings, run_dir)

    console, _ = recording_console()
    assert compare(settings, modes=["agg", "pd"], resume=run_dir.name, console=console) == run_dir

    assert (run_dir / "agg.jsonl").read_text().startswith(kept)  # finished points untouched
    measured = [r["tag"] for mode in ("agg", "pd") for r in rows(run_dir / f"{mode}.jsonl")]
    assert collections.Counter(measured) == collections.Counter(TAGS["agg"] + TAGS["pd"])
    meta = metadata(run_dir)
    ok = [p["tag"] for p in meta["points"] if p["status"] == "ok"]
    assert collections.Counter(ok) == collections.Counter(measured)  # each measured once
    assert meta["interrupted"] is False and len(meta["resumed"]) == 1
    assert_nothing_left(settings, run_dir)


def requests_served(url: str) -> float:
    """``sglang:num_requests_total`` of one worker, from its Prometheus text."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = [line.split()[-1] for line in text.splitlines()
              if line.startswith("sglang:num_requests_total")]  # fmt: skip
    return sum(float(v) for v in values)


def test_compare_xpyd_runs_every_decode_worker(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path, NUM_DECODE="2", BENCH_MAX_CONCURRENCY="8")
    decodes = server_specs(settings, "decode")
    served: list[list[float]] = []
    run_dir = compare(settings, modes=["pd"], console=recording_console()[0],
                      on_point=lambda _: served.append([requests_served(d.url) for d in decodes]))

    (row,) = rows(run_dir / "pd_1p2d.jsonl")
    assert row["tag"] == "pd_1p2d_in64_out16_c8_rinf" and row["completed"] == 16
    meta = metadata(run_dir)
    assert {m["name"]: m["gpus"] for m in meta["modes"]} == {"pd_1p2d": 3}
    assert {"prefill", "decode-0", "decode-1"} <= set(meta["servers"])
    # The router spread the requests over both decode workers (warmup included).
    assert len(served) == 1 and all(n > 0 for n in served[0]) and sum(served[0]) >= 16
    assert_nothing_left(settings, run_dir)


def test_compare_stops_only_what_its_run_started(tmp_path: Path) -> None:
    """A server of another run (another port, the same RUN_DIR) survives a compare's teardown."""
    settings = loopback_settings(tmp_path, BENCH_MAX_CONCURRENCY="8")
    console, _ = recording_console()
    try:
        (other,) = deploy.up_role(settings, "prefill", run_id="other-run", console=console)
        run_dir = compare(settings, modes=["agg"], console=console)
        assert len(rows(run_dir / "agg.jsonl")) == 1
        assert not answers(server_specs(settings, "agg")[0].url)  # the run's server is gone
        assert answers(other.url)  # the other run's is not
        assert [i.name for i in deploy.status(settings) if i.state == "running"] == [
            other.name]
    finally:
        stopped = deploy.down(settings, console, run_id="other-run")
    assert stopped == 1 and not answers(other.url)
