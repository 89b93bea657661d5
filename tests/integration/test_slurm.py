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

from tests.conftest import REPO
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
from tests.integration.test_readme import readme_block

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


def runs(env: dict[str, str]) -> dict[str, Path]:
    """``salloc`` / ``submit`` -> the run directory each way made (the submitted one has the
    batch script beside its results)."""
    found = {}
    for path in Path(setting(env, "RESULTS_DIR")).iterdir():
        found["submit" if (path / "job.sbatch").is_file() else "salloc"] = path
    return found


def test_readme_slurm_block_runs_as_written(tmp_path: Path) -> None:
    """The README's Slurm commands: compare inside salloc, then submit followed to its end."""
    block = readme_block("## Slurm")
    assert "salloc -N2 --gpus-per-node=1 invoke compare" in block and "invoke submit" in block
    # smg: the same PD routing as sglang-router without importing SGLang (30 s under load).
    env = slurm_env(tmp_path, ROUTER_IMPL="smg")
    env["PATH"] = f"{Path(INVOKE).parent}:{env['PATH']}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]

    assert re.search(r"^srun --jobid=\d+ --overlap --nodes=1 --ntasks=1 --nodelist=sgl-n2 ",
                     done.stdout, re.MULTILINE)  # the dry run: real nodes, every step
    job = re.search(r"submitted job (\d+) \(sglb-job-[\d-]+\): (\S+)", done.stdout)
    assert job, out[-4000:]
    assert "run directory:" in done.stdout  # the job's own output, followed to its end
    assert re.search(rf"job-{job[1]} .* job {job[1]} COMPLETED on sgl-n\[1-2\] .* exited\(0\)",
                     done.stdout)  # fmt: skip
    assert f"job-{job[1]} had already exited(0)" in done.stdout  # invoke down forgot it
    made = runs(env)
    assert set(made) == {"salloc", "submit"}
    for how, run in made.items():
        assert [rows(run / f) for f in ("agg.jsonl", "pd.jsonl")] == [2, 2], how
        meta = metadata(run)
        assert all(p["status"] == "ok" for p in meta["points"]) and len(meta["points"]) == 4
        slurm = meta["slurm"]
        # salloc asked for one GPU per node; the batch job is --exclusive: the nodes' two.
        assert (slurm["nodelist"], slurm["nodes"], slurm["gpus_per_node"]) == (
            "sgl-n[1-2]", ["sgl-n1", "sgl-n2"], [1, 1] if how == "salloc" else [2, 2])
        assert slurm["version"].startswith("slurm") and slurm["container"] == "none"
        assert slurm["placement"] == {
            "agg": {"agg-0": {"node": "sgl-n1", "gpus": "0"}},
            "pd": {"prefill-0": {"node": "sgl-n1", "gpus": "0"},
                   "decode-0": {"node": "sgl-n2", "gpus": "0"}}}  # fmt: skip
        assert meta["servers"]["decode"]["disaggregation_mode"] == "decode"
    submitted = metadata(made["submit"])["slurm"]
    assert submitted["job_id"] == job[1]
    assert Path(submitted["batch_script"]).read_text() == Path(job[2]).read_text()
    assert re.search(r"stopped sglang-decode \(slurm, step \d+\.\d+ on sgl-n2\)", done.stdout)
    assert not [s for s in steps() if s[0].startswith(f"{job[1]}.")]
    assert "nothing of ours" in invoke(env, "status").stdout


def test_workers_on_one_node_hold_their_own_gpus_and_down_stops_only_ours(
    tmp_path: Path,
) -> None:
    env = slurm_env(tmp_path, NUM_DECODE="2", DECODE_NODES="sgl-n2")
    ready, release = tmp_path / "ready", tmp_path / "release"
    # A step that is not ours, in the same job and on the same node: status and down leave it.
    script = (f"srun --overlap -N1 -n1 -w sgl-n2 -J someone-else sleep 300 & "
              f"{INVOKE} decode && touch {ready} && "
              f"while [ ! -e {release} ]; do sleep 0.2; done; {INVOKE} down")
    proc = salloc(env, tmp_path, "gpus", "", script=script)
    try:
        wait_for("both decode workers", ready.exists, proc, timeout=120)
        port = int(setting(env, "DECODE_PORT"))
        seen = decode_environments(port, 2)
        status = invoke(env, "status").stdout
    finally:
        release.touch()
    assert finish(proc, timeout=120) == 0, (tmp_path / "salloc.log").read_text()[-3000:]

    assert {e["SLURMD_NODENAME"] for e in seen.values()} == {"sgl-n2"}
    assert [seen[port + i]["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0", "1"]
    # The trap this avoids: both steps hold both of the job's GPUs on the node.
    assert {e["SLURM_STEP_GPUS"] for e in seen.values()} == {"0,1"}
    assert re.search(r"sglang-decode-1 .* step \d+\.\d+ on sgl-n2 .* http://sgl-n2:\d+ .* running",
                     status)  # fmt: skip
    assert "someone-else" not in status
    (left,) = (tmp_path / "steps-left.txt").read_text().splitlines()
    assert left.endswith(" someone-else")
    assert "stopped sglang-decode-0 (slurm" in (tmp_path / "salloc.log").read_text()


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
    # The mode ended at the dead decode: the rest are not measured, left for --resume (issue 9).
    assert {p["status"] for p in points[1:]} == {"not_measured"}
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
