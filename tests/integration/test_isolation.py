"""Issue 9, findings 1 and 3, reproduced for real on the simulator: a second compare never takes
over the first one's servers, and a server that dies mid-sweep ends its mode at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sglbench.errors import BenchError, ServerError
from sglbench.execute.bench import PointResult
from sglbench.execute.compare import compare
from sglbench.execute.process import ProcessRuntime
from sglbench.record.schema import RunRecord
from tests.conftest import REPO, offline_env
from tests.integration.test_bench import loopback_settings, recording_console, rows
from tests.integration.test_compare import (
    assert_nothing_left,
    env_file,
    metadata,
    run_dirs,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def test_a_second_compare_refuses_instead_of_taking_over_the_first(tmp_path: Path) -> None:
    """Before: the second run stopped the first run's agg server by name and started its own;
    the first then recorded its next point as ok (30/30), measured against the other server."""
    settings = loopback_settings(tmp_path, BENCH_MAX_CONCURRENCY="4,8")
    env = {**offline_env(), "SGLBENCH_ENV_FILE": str(env_file(settings, tmp_path / "a.env"))}
    invoke = str(Path(sys.executable).with_name("invoke"))
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen([invoke, "compare", "--modes", "agg"], cwd=REPO, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        agg = ProcessRuntime(settings)
        wait_for(lambda: agg.record("sglang-agg") is not None, "the first run's agg server",
                 first, timeout=180)  # fmt: skip
        record = agg.record("sglang-agg")
        assert record is not None
        with pytest.raises(ServerError, match=rf"is held by run {record.run_id} \(invoke compare"
                                              rf".*invoke down --run {record.run_id}"):
            compare(settings, modes=["agg"], console=recording_console()[0])
        still = agg.record("sglang-agg")
        assert still is not None and still.pid == record.pid  # untouched
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    (run_dir,) = run_dirs(settings)  # the refused run left no directory
    assert [r["completed"] for r in rows(run_dir / "agg.jsonl")] == [16, 16]
    assert_nothing_left(settings, run_dir)


def test_a_server_killed_mid_sweep_ends_its_mode_at_once_and_resume_finishes(
    tmp_path: Path,
) -> None:
    """Before: every remaining point was still attempted, with 50-110 lines of tracebacks."""
    settings = loopback_settings(tmp_path, BENCH_MAX_CONCURRENCY="2,4,8")
    runtime = ProcessRuntime(settings)

    def kill_decode(result: PointResult) -> None:
        if result.tag == "pd_in64_out16_c2_rinf":
            record = runtime.record("sglang-decode")
            assert record is not None
            os.kill(record.pid, signal.SIGKILL)

    console, out = recording_console()
    with pytest.raises(BenchError, match=r"sglang-decode exited \(killed by signal 9\) during "
                                         r"pd_in64_out16_c4_rinf"):
        compare(settings, modes=["agg", "pd"], console=console, on_point=kill_decode)
    (run_dir,) = run_dirs(settings)
    assert [r["tag"] for r in rows(run_dir / "pd.jsonl")] == ["pd_in64_out16_c2_rinf"]
    statuses = {p["tag"]: p["status"] for p in metadata(run_dir)["points"]}
    assert statuses["pd_in64_out16_c4_rinf"] == "not_measured"
    assert statuses["pd_in64_out16_c8_rinf"] == "not_measured"
    assert list(statuses.values()).count("ok") == 4  # agg's three and pd's first
    own = [line for line in out.getvalue().splitlines() if not line.startswith("  | ")]
    assert not any("Traceback" in line for line in own)  # the server's log is quoted, not ours
    assert "sglang-decode exited (killed by signal 9)" in out.getvalue()
    assert f"invoke compare --resume {run_dir.name}" in out.getvalue()
    assert_nothing_left(settings, run_dir)

    compare(settings, modes=["agg", "pd"], resume=run_dir.name, console=recording_console()[0])
    assert [r["tag"] for r in rows(run_dir / "pd.jsonl")] == [
        "pd_in64_out16_c2_rinf", "pd_in64_out16_c4_rinf", "pd_in64_out16_c8_rinf"]
    record = RunRecord.load(run_dir)
    assert record is not None and all(p.status == "ok" for p in record.points)
    assert_nothing_left(settings, run_dir)
