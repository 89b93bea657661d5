"""Bad input on a real Slurm: one line naming what to change, a non-zero exit, nothing left.

No allocation and no submit, a stale SLURM_JOB_ID, a node list smaller than the topology, a
partition that does not exist, pyxis or apptainer asked for where they are missing (neither is
installed on the test cluster: the real "missing" case), and a step that dies while we wait.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.slurm_cluster import (
    finish,
    invoke,
    needs_slurm,
    own_jobs,  # noqa: F401 - the fixture, used through pytestmark
    salloc,
    setting,
    slurm_env,
)

pytestmark = [pytest.mark.slurm, needs_slurm, pytest.mark.usefixtures("own_jobs")]


def said(tmp_path: Path) -> list[str]:
    """What invoke printed inside salloc (salloc's own lines left out)."""
    text = (tmp_path / "salloc.log").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("salloc:")]


def nothing_left(env: dict[str, str], tmp_path: Path) -> None:
    """No results, no step record, and (inside salloc) no step of the job."""
    assert not Path(setting(env, "RESULTS_DIR")).exists()
    assert not (Path(setting(env, "RUN_DIR")) / "slurm" / "steps").exists()
    left = tmp_path / "steps-left.txt"
    assert not left.exists() or left.read_text() == ""


def in_salloc(tmp_path: Path, args: str, nodes: int = 1, **keys: str) -> tuple[int, list[str]]:
    env = slurm_env(tmp_path, **keys)
    code = finish(salloc(env, tmp_path, "errors", args, nodes=nodes), timeout=120)
    nothing_left(env, tmp_path)
    return code, said(tmp_path)


def test_no_allocation_and_no_submit(tmp_path: Path) -> None:
    env = slurm_env(tmp_path)
    for task in (["compare"], ["agg"]):
        done = invoke(env, *task)
        assert (done.returncode, done.stderr.splitlines()) == (2, [
            "error: AGG_RUNTIME=slurm (or RUNTIME=slurm): no Slurm allocation here (SLURM_JOB_ID "
            "is unset); run inside `salloc -N<nodes> ...` or an sbatch job, or submit from a "
            "login node with `invoke submit`"])
    nothing_left(env, tmp_path)


def test_a_stale_job_id(tmp_path: Path) -> None:
    env = {**slurm_env(tmp_path), "SLURM_JOB_ID": "999999"}
    done = invoke(env, "compare")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: SLURM_JOB_ID=999999: ") and "stale" in done.stderr
    nothing_left(env, tmp_path)


def test_a_node_list_smaller_than_the_topology(tmp_path: Path) -> None:
    code, lines = in_salloc(tmp_path, "compare --modes pd")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: CLUSTER_PLACEMENT=split: 1P1D does not fit: decode worker "
                               "0 (TP 1) finds no node with enough free GPUs among allocation ")
    assert lines[0].endswith(": 1 node(s) sgl-n1; allocate 2 nodes (salloc -N2) or set "
                             "CLUSTER_PLACEMENT=pack")


def test_a_partition_that_does_not_exist(tmp_path: Path) -> None:
    env = slurm_env(tmp_path)
    done = invoke(env, "submit", "--set", "CLUSTER_PARTITION=nope")
    assert (done.returncode, done.stderr.splitlines()) == (2, [
        "error: CLUSTER_PARTITION=nope: no such partition (sinfo -h -p nope prints nothing); "
        "partitions here: ci"])
    assert not (Path(setting(env, "RUN_DIR")) / "slurm").exists()


PYXIS = ("error: CLUSTER_CONTAINER=pyxis: this srun has no --container-image (the pyxis plugin "
         "is not loaded: `srun --help` does not list it); install pyxis and enroot, or set "
         "CLUSTER_CONTAINER=apptainer or none")


def test_pyxis_where_the_plugin_is_missing(tmp_path: Path) -> None:
    code, lines = in_salloc(tmp_path, "compare --modes agg", CLUSTER_CONTAINER="pyxis")
    assert (code, lines) == (2, [PYXIS])
    env = slurm_env(tmp_path, CLUSTER_CONTAINER="pyxis")
    done = invoke(env, "submit")
    assert (done.returncode, done.stderr.splitlines()) == (2, [PYXIS])
    assert not (Path(setting(env, "RUN_DIR")) / "slurm").exists()


def test_apptainer_missing_on_the_nodes(tmp_path: Path) -> None:
    code, lines = in_salloc(tmp_path, "compare --modes pd", nodes=2,
                            CLUSTER_CONTAINER="apptainer")  # fmt: skip
    assert (code, lines) == (2, [
        "error: CLUSTER_CONTAINER=apptainer: apptainer is not installed on sgl-n1, sgl-n2; "
        "install it there, or set CLUSTER_CONTAINER=none (SGLang on the nodes) or pyxis"])


def test_a_step_that_dies_while_we_wait_shows_its_exit_code_and_log(tmp_path: Path) -> None:
    env = slurm_env(tmp_path, SERVER_PYTHON="/nonexistent/python")
    code = finish(salloc(env, tmp_path, "dies", "compare --modes agg", nodes=1), timeout=120)
    text = "\n".join(said(tmp_path))
    port = setting(env, "AGG_PORT")
    assert code == 1
    # The step's `env` wrapper cannot run the interpreter: 127, as a shell says it.
    assert (f"error: sglang-agg at http://sgl-n1:{port} exited (exit code 127) before it was "
            "ready; last log lines:") in text
    assert "‘/nonexistent/python’: No such file or directory" in text  # the step's own log
    assert "srun: error: sgl-n1: task 0: Exited with exit code 127" in text  # srun's words
    assert (tmp_path / "steps-left.txt").read_text() == ""
    assert not list((Path(setting(env, "RUN_DIR")) / "slurm" / "steps").glob("*.json"))
