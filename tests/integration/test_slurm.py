"""RUNTIME=slurm on a real two-node Slurm 22.05 (``.ci/slurm-up``): the simulator as job steps,
the real router and SGLang's real bench client where the harness runs.

A full ``invoke compare`` inside ``salloc``; the same through ``invoke submit`` (sbatch), followed
to its end from the "login node"; a decode step cancelled mid-sweep; Ctrl-C on the harness. Each
checks what a user would: rows, the run record, and that no step of ours is left running.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from sglbench.execute import deploy
from sglbench.settings import load_settings
from tests.integration.slurm_cluster import (
    INVOKE,
    finish,
    invoke,
    needs_slurm,
    own_jobs,  # noqa: F401 - the fixture, used through pytestmark
    rows,
    run_dir,
    salloc,
    setting,
    slurm_env,
    steps,
    wait_for,
)

pytestmark = [pytest.mark.slurm, needs_slurm, pytest.mark.usefixtures("own_jobs")]


def metadata(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "metadata.json").read_text())
    return data


def decode_environments(port: int, count: int) -> dict[int, dict[str, str]]:
    """Port -> the environment of each running decode simulator on ports port..port+count-1."""
    wanted = {str(port + i) for i in range(count)}
    found: dict[int, dict[str, str]] = {}
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "sglbench.sim" in argv and "decode" in argv and "--port" in argv:
            served = argv[argv.index("--port") + 1]
            if served in wanted:
                try:
                    found[int(served)] = proc.environ()
                except psutil.Error:
                    continue
    return found if len(found) == count else {}


def test_compare_in_salloc_runs_agg_and_pd_as_steps_on_both_nodes(tmp_path: Path) -> None:
    env = slurm_env(tmp_path)
    decode_port = int(setting(env, "DECODE_PORT"))
    proc = salloc(env, tmp_path, "compare", "compare --topologies agg,1p2d")
    # While PD runs: decode-0 and decode-1 share sgl-n2, and each sees only its own GPU.
    seen = wait_for("two decode steps", lambda: decode_environments(decode_port, 2), proc)
    assert finish(proc) == 0, (tmp_path / "salloc.log").read_text()[-3000:]
    out = (tmp_path / "salloc.log").read_text()

    assert {e["SLURMD_NODENAME"] for e in seen.values()} == {"sgl-n2"}
    assert [seen[decode_port + i]["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0", "1"]
    # The trap this avoids: both steps hold both of the job's GPUs on that node.
    assert {e["SLURM_STEP_GPUS"] for e in seen.values()} == {"0,1"}

    run = run_dir(env)
    assert [rows(run / f) for f in ("agg.jsonl", "pd_1p2d.jsonl")] == [2, 2]
    meta = metadata(run)
    assert all(p["status"] == "ok" for p in meta["points"]) and len(meta["points"]) == 4
    slurm = meta["slurm"]
    assert slurm["nodelist"] == "sgl-n[1-2]" and slurm["nodes"] == ["sgl-n1", "sgl-n2"]
    assert slurm["gpus_per_node"] == [2, 2] and slurm["version"].startswith("slurm")
    assert slurm["placement"] == {
        "agg": {"agg-0": {"node": "sgl-n1", "gpus": "0"}},
        "pd_1p2d": {"prefill-0": {"node": "sgl-n1", "gpus": "0"},
                    "decode-0": {"node": "sgl-n2", "gpus": "0"},
                    "decode-1": {"node": "sgl-n2", "gpus": "1"}}}  # fmt: skip
    assert meta["servers"]["decode-1"]["disaggregation_mode"] == "decode"
    job = re.search(r"Granted job allocation (\d+)", out)
    assert job and slurm["job_id"] == job.group(1)
    for name, node in (("sglang-agg", "sgl-n1"), ("sglang-decode-1", "sgl-n2")):
        assert re.search(rf"stopped {name} \(slurm, step {job.group(1)}\.\d+ on {node}\)", out)
    assert (tmp_path / "steps-left.txt").read_text() == ""
    assert "nothing of ours" in invoke(env, "status").stdout


def test_submit_runs_the_same_compare_as_a_batch_job_followed_to_its_end(tmp_path: Path) -> None:
    # smg: the same PD routing as sglang-router, without importing SGLang (30 s under load).
    env = slurm_env(tmp_path, ROUTER_IMPL="smg")
    settings = load_settings(Path(env["SGLBENCH_ENV_FILE"]), {}).settings
    sent = invoke(env, "submit")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    found = re.search(r"submitted job (\d+) \(sglb-job-[\d-]+\): (\S+)", sent.stdout)
    assert found, sent.stdout
    job, script = found.group(1), Path(found.group(2))
    try:
        text = script.read_text()
        assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=1" in text
        assert text.rstrip().endswith("-m invoke compare")

        # What `invoke status` lists, asked in-process while the job runs: its steps, then its end.
        def listed() -> dict[str, str]:
            return {i.name: i.shown_state for i in deploy.status(settings)}

        wait_for("the job's decode step", lambda: listed().get("sglang-decode") == "running",
                 None, timeout=240)  # fmt: skip
        wait_for("the job's end", lambda: listed().get(f"job-{job}") == "exited(0)", None,
                 timeout=240)  # fmt: skip
        status = invoke(env, "status").stdout
        assert re.search(rf"job-{job} .* job {job} COMPLETED on sgl-n\[1-2\] .* exited\(0\)",
                         status)  # fmt: skip
        log = invoke(env, "logs", "job").stdout
        assert "run directory:" in log and "pd_in64_out16_c8_rinf" in log
    finally:
        down = invoke(env, "down")
    assert f"job-{job}" in down.stdout and "nothing of ours" in invoke(env, "status").stdout

    run = run_dir(env)
    assert [rows(run / f) for f in ("agg.jsonl", "pd.jsonl")] == [2, 2]
    slurm = metadata(run)["slurm"]
    assert slurm["job_id"] == job and slurm["nodes"] == ["sgl-n1", "sgl-n2"]
    assert Path(slurm["batch_script"]).read_text() == text  # the script beside the results
    assert not [s for s in steps() if s[0].startswith(f"{job}.")]


def test_a_decode_step_cancelled_mid_sweep_keeps_finished_points(tmp_path: Path) -> None:
    env = slurm_env(tmp_path, BENCH_MAX_CONCURRENCY="2,4,8", BENCH_NUM_PROMPTS="24",
                    ROUTER_IMPL="smg")  # fmt: skip
    proc = salloc(env, tmp_path, "scancel", "compare --modes pd")
    results = Path(setting(env, "RESULTS_DIR"))
    wait_for("the first PD point", lambda: rows(next(results.glob("*/pd.jsonl"), Path("-"))),
             proc)  # fmt: skip
    (decode,) = [step for step, name in steps() if re.fullmatch(r"sglb-.*-decode-0", name)]
    subprocess.run(["scancel", decode], check=True, timeout=30)  # as a user or the scheduler
    assert finish(proc) == 1
    out = (tmp_path / "salloc.log").read_text()
    assert "sglang-decode had already exited(137)" in out
    assert re.search(r"error: [12] point\(s\) failed \(rerun them with --resume", out)
    run = run_dir(env)
    points = metadata(run)["points"]
    assert points[0]["status"] == "ok" and rows(run / "pd.jsonl") >= 1
    assert {p["status"] for p in points[1:]} == {"failed"}
    assert (tmp_path / "steps-left.txt").read_text() == ""
    assert not list((Path(setting(env, "RUN_DIR")) / "slurm" / "steps").glob("*.json"))


def test_ctrl_c_on_the_harness_cancels_every_step(tmp_path: Path) -> None:
    env = slurm_env(tmp_path, BENCH_MAX_CONCURRENCY="2,4,8", BENCH_NUM_PROMPTS="24")
    proc = salloc(env, tmp_path, "ctrl-c", "compare --modes agg")
    results = Path(setting(env, "RESULTS_DIR"))
    wait_for("the first agg point", lambda: rows(next(results.glob("*/agg.jsonl"), Path("-"))),
             proc)  # fmt: skip
    harness = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if p.cmdline()[1:3] == [INVOKE, "compare"]]  # fmt: skip
    assert len(harness) == 1
    harness[0].send_signal(signal.SIGINT)  # what the terminal's Ctrl-C sends
    assert finish(proc) == 130
    out = (tmp_path / "salloc.log").read_text()
    assert re.search(r"stopped sglang-agg \(slurm, step \d+\.\d+ on sgl-n1\)", out)
    assert "interrupted: finished points are kept" in out
    run = run_dir(env)
    assert metadata(run)["interrupted"] is True and rows(run / "agg.jsonl") >= 1
    assert (tmp_path / "steps-left.txt").read_text() == ""
