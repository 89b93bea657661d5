"""Slurm's pure builders: placement, the srun line of a server step, the sbatch script, the keys."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sglbench.errors import ConfigError
from sglbench.execute.slurm_jobs import batch_job, compare_arguments
from sglbench.plan.placement import nodes_needed, place
from sglbench.plan.router import router_spec
from sglbench.plan.servers import server_specs
from sglbench.plan.slurm import container_image, sbatch_script, srun_argv, step_name
from sglbench.settings import Settings, load_settings
from sglbench.settings.model import Allocation
from sglbench.types import Topology
from tests.conftest import REPO

PD = Topology.disaggregated(1, 1)
TWO = Allocation("42", "gpu[01-02]", ("gpu01", "gpu02"), (2, 2))


def slurm(alloc: Allocation | None = TWO, **keys: str) -> Settings:
    """Settings with every role on Slurm, simulated, in ``alloc``."""
    base = {"RUNTIME": "slurm", "SIMULATE": "true", "IB_DEVICE": "", **keys}
    settings = load_settings(None, {}, base).settings
    return settings.model_copy(update={"allocation": alloc})


def where(settings: Settings, topology: Topology) -> list[tuple[str, str, str]]:
    """(worker, node, GPU ids) of every placed worker."""
    return [(f"{s.role}-{s.index}", s.node, s.gpu_ids) for s in place(settings, topology)]


# --- placement ---------------------------------------------------------------------------------

def test_split_puts_each_role_on_nodes_of_its_own_as_the_original() -> None:
    assert where(slurm(), PD) == [("prefill-0", "gpu01", "0"), ("decode-0", "gpu02", "0")]
    two_two = Topology.disaggregated(2, 2)
    assert where(slurm(), two_two) == [
        ("prefill-0", "gpu01", "0"), ("prefill-1", "gpu01", "1"),
        ("decode-0", "gpu02", "0"), ("decode-1", "gpu02", "1")]  # fmt: skip


def test_pack_shares_a_node_and_gives_each_worker_its_own_gpu() -> None:
    packed = slurm(CLUSTER_PLACEMENT="pack")
    assert where(packed, PD) == [("prefill-0", "gpu01", "0"), ("decode-0", "gpu01", "1")]
    assert where(packed, Topology.aggregated(3)) == [
        ("agg-0", "gpu01", "0"), ("agg-1", "gpu01", "1"), ("agg-2", "gpu02", "0")]


def test_tp_takes_consecutive_gpus_of_one_node() -> None:
    four = Allocation("7", "n[1-2]", ("n1", "n2"), (4, 4))
    topo = Topology.disaggregated(1, 2, prefill_tp=2, decode_tp=2)
    assert where(slurm(four), topo) == [("prefill-0", "n1", "0,1"), ("decode-0", "n2", "0,1"),
                                        ("decode-1", "n2", "2,3")]  # fmt: skip


def test_explicit_nodes_per_role() -> None:
    settings = slurm(PREFILL_NODES="gpu02", DECODE_NODES="gpu01")
    assert where(settings, PD) == [("prefill-0", "gpu02", "0"), ("decode-0", "gpu01", "0")]
    with pytest.raises(ConfigError, match=r"^DECODE_NODES: node gpu09 is not in the allocation"):
        place(slurm(DECODE_NODES="gpu09"), PD)


def test_without_gpu_gres_the_setting_counts() -> None:
    bare = Allocation("9", "n[1-2]", ("n1", "n2"), (0, 0))
    assert where(slurm(bare, CLUSTER_GPUS_PER_NODE="2", CLUSTER_PLACEMENT="pack"), PD) == [
        ("prefill-0", "n1", "0"), ("decode-0", "n1", "1")]


def test_a_node_list_smaller_than_the_topology_is_one_line() -> None:
    one = Allocation("5", "gpu01", ("gpu01",), (1,))
    with pytest.raises(ConfigError) as err:
        place(slurm(one), PD)
    message = str(err.value)
    assert "\n" not in message and message.startswith("CLUSTER_PLACEMENT=split: 1P1D does not fit")
    assert "allocation 5: 1 node(s) gpu01" in message and "salloc -N2" in message
    with pytest.raises(ConfigError, match=r"^DECODE_TP=4: a worker's TP spans one node"):
        place(slurm(), Topology.disaggregated(1, 1, decode_tp=4))


def test_two_workers_on_one_node_may_not_share_a_port() -> None:
    packed = slurm(Allocation("3", "n1", ("n1",), (4,)), CLUSTER_PLACEMENT="pack")
    with pytest.raises(ConfigError, match=r"^DECODE_PORT: decode-0 \(DECODE_PORT\) and prefill-1 "
                                          r"\(PREFILL_PORT\) would both listen on n1:30001"):
        place(packed, Topology.disaggregated(2, 1))


def test_nodes_needed_without_an_allocation() -> None:
    free = slurm(None)
    assert nodes_needed(free, PD) == (2, ())
    assert nodes_needed(free, Topology.disaggregated(2, 3)) == (5, ())
    assert nodes_needed(slurm(None, CLUSTER_GPUS_PER_NODE="4"), Topology.disaggregated(2, 3)) \
        == (2, ())
    assert nodes_needed(slurm(None, PREFILL_NODES="gpu07"), PD) == (2, ("gpu07",))


def test_urls_and_gpus_of_slurm_workers_come_from_their_node() -> None:
    settings = slurm(CLUSTER_PLACEMENT="pack")
    (prefill,) = server_specs(settings, "prefill", PD)
    (decode,) = server_specs(settings, "decode", PD)
    assert (prefill.url, prefill.gpus, decode.url, decode.gpus) == (
        "http://gpu01:30000", "0", "http://gpu01:30001", "1")
    router = router_spec(settings, PD)
    assert "http://gpu01:30000" in router.args and router.host == "127.0.0.1"
    # A role on another runtime keeps its host key.
    mixed = slurm(PREFILL_RUNTIME="process", PREFILL_HOST="127.0.0.1")
    assert server_specs(mixed, "prefill", PD)[0].url == "http://127.0.0.1:30000"
    assert server_specs(mixed, "decode", PD)[0].host == "gpu01"


def test_placeholders_without_an_allocation() -> None:
    assert [s.host for s in server_specs(slurm(None), "decode", PD)] == ["<node2>"]


# --- the srun line ----------------------------------------------------------------------------

def srun_line(settings: Settings, role: str = "decode") -> list[str]:
    spec = next(s for s in server_specs(settings, "decode" if role == "decode" else "prefill", PD))
    return srun_argv(settings, spec, job_id="42", name=step_name("run1", spec),
                     output=Path("/shared/run/logs/sglang-decode.log"), python="/venv/bin/python")


def test_srun_line_of_a_server_step() -> None:
    argv = srun_line(slurm())
    assert argv[:8] == ["srun", "--jobid=42", "--overlap", "--nodes=1", "--ntasks=1",
                        "--nodelist=gpu02", "--job-name=sglb-run1-decode-0",
                        "--output=/shared/run/logs/sglang-decode.log"]  # fmt: skip
    # The GPU ids come from a wrapper in the step (Slurm would overwrite an exported value), and
    # no gres flag: overlapping steps with one share the same GPU.
    assert argv[8:11] == ["env", "CUDA_VISIBLE_DEVICES=0", "PYTHONUNBUFFERED=1"]
    assert argv[11:14] == ["/venv/bin/python", "-m", "sglbench.sim"]
    assert not [a for a in argv if a.startswith(("--gpus", "--gres"))]
    assert "--host" in argv and argv[argv.index("--host") + 1] == "0.0.0.0"


def test_srun_extra_args_go_before_the_command() -> None:
    argv = srun_line(slurm(CLUSTER_SRUN_ARGS="--cpus-per-task=8 --mpi=pmix"))
    assert argv[8:10] == ["--cpus-per-task=8", "--mpi=pmix"] and argv[10] == "env"


def test_pyxis_step() -> None:
    argv = srun_line(slurm(CLUSTER_CONTAINER="pyxis", SGLANG_IMAGE="lmsysorg/sglang:v0.5",
                           HF_CACHE_DIR="/data/hf", CLUSTER_CONTAINER_MOUNTS="/scratch:/scratch"))
    assert "--container-image=lmsysorg/sglang:v0.5" in argv
    assert "--container-mounts=/data/hf:/root/.cache/huggingface,/scratch:/scratch" in argv
    # Inside the image: its python3, and HF_HOME where the cache is mounted.
    assert argv[argv.index("env"):][:4] == ["env", "CUDA_VISIBLE_DEVICES=0", "PYTHONUNBUFFERED=1",
                                            "HF_HOME=/root/.cache/huggingface"]  # fmt: skip
    assert argv[argv.index("env") + 4:][:3] == ["python3", "-m", "sglbench.sim"]


def test_apptainer_step() -> None:
    settings = slurm(CLUSTER_CONTAINER="apptainer", SGLANG_IMAGE="lmsysorg/sglang:v0.5",
                     HF_CACHE_DIR="/data/hf")
    argv = srun_line(settings)
    start = argv.index("apptainer")
    assert argv[start:start + 6] == ["apptainer", "exec", "--nv", "--bind",
                                     "/data/hf:/root/.cache/huggingface",
                                     "docker://lmsysorg/sglang:v0.5"]  # fmt: skip
    assert argv[start + 6] == "python3" and not [a for a in argv if "container-image" in a]
    assert container_image(slurm(CLUSTER_CONTAINER="apptainer",
                                 CLUSTER_CONTAINER_IMAGE="/images/sglang.sif")) \
        == "/images/sglang.sif"


# --- the sbatch script -------------------------------------------------------------------------

def test_sbatch_script() -> None:
    settings = slurm(None, CLUSTER_PARTITION="gh200", CLUSTER_ACCOUNT="infra",
                     CLUSTER_TIME_LIMIT="02:00:00", CLUSTER_GPUS_PER_NODE="4",
                     CLUSTER_SBATCH_ARGS="--qos=high")
    text = sbatch_script(settings, name="sglb-job-x", nodes=2, nodelist=(),
                         output=Path("/shared/run/slurm/jobs/x/job-%j.out"),
                         workdir=Path("/home/me/sglang benchmark"),
                         command=["/venv/bin/python", "-m", "invoke", "compare", "--modes", "pd"])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    options = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH")]
    assert options == ["--job-name=sglb-job-x", "--nodes=2", "--ntasks-per-node=1", "--exclusive",
                       "--gpus-per-node=4", "--time=02:00:00",
                       "--output=/shared/run/slurm/jobs/x/job-%j.out", "--partition=gh200",
                       "--account=infra", "--qos=high"]  # fmt: skip
    assert "cd '/home/me/sglang benchmark'" in lines
    assert lines[-1] == "exec /venv/bin/python -m invoke compare --modes pd"
    named = sbatch_script(settings, name="j", nodes=2, nodelist=("gpu07",), output=Path("/o"),
                          workdir=Path("/w"), command=["true"])
    assert "#SBATCH --nodelist=gpu07" in named.splitlines()


def test_submit_passes_the_compare_arguments_and_refuses_secrets() -> None:
    assert compare_arguments("agg,pd", "", 0, "", False, ["BENCH_NUM_PROMPTS=8"]) == [
        "--modes", "agg,pd", "--set", "BENCH_NUM_PROMPTS=8"]
    assert compare_arguments(None, "aggx2,1p1d", 0, "RUN", True, None) == [
        "--topologies", "aggx2,1p1d", "--resume", "RUN", "--force"]
    with pytest.raises(ConfigError, match=r"^--set HF_TOKEN=\.\.\.: a secret would be written"):
        compare_arguments(None, "", 0, "", False, ["HF_TOKEN=hf_x"])


# --- settings ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "message"), [
    ({"CLUSTER_TIME_LIMIT": "1 hour"}, r"^CLUSTER_TIME_LIMIT='1 hour' .*Slurm time limit"),
    ({"CLUSTER_PARTITION": "a b"}, r"^CLUSTER_PARTITION='a b' .*one name"),
    ({"CLUSTER_CONTAINER": "docker"}, r"^CLUSTER_CONTAINER='docker' .*none.*pyxis.*apptainer"),
    ({"CLUSTER_CONTAINER_MOUNTS": "data:/data"}, r"^CLUSTER_CONTAINER_MOUNTS=.*absolute paths"),
    ({"CLUSTER_SRUN_ARGS": "-w node3"}, r"^CLUSTER_SRUN_ARGS: -w is set from CLUSTER_PLACEMENT"),
    ({"CLUSTER_SRUN_ARGS": "--job-name=x"}, r"^CLUSTER_SRUN_ARGS: --job-name is set from"),
    ({"CLUSTER_SBATCH_ARGS": "-N4"}, r"^CLUSTER_SBATCH_ARGS: -N is set from the topologies"),
    ({"CLUSTER_SBATCH_ARGS": "--time 5"}, r"^CLUSTER_SBATCH_ARGS: --time is set from "
                                          "CLUSTER_TIME_LIMIT"),
    ({"SERVER_BIND_HOST": "127.0.0.1"}, r"^SERVER_BIND_HOST=127.0.0.1: agg runs as a Slurm step"),
    ({"DECODE_NODES": "gpu01 gpu:02"}, r"^DECODE_NODES=.*host name"),
])  # fmt: skip
def test_bad_slurm_settings_are_one_line(keys: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(None, {}, {"RUNTIME": "slurm", **keys})
    assert "\n" not in str(err.value)


def test_our_keys_never_collide_with_slurms_variables() -> None:
    keys = [k for k in Settings.model_fields if k.startswith("cluster_")]
    assert keys and all(not k.upper().startswith(("SLURM", "SBATCH", "SALLOC", "SRUN"))
                        for k in keys)  # fmt: skip
    # Slurm's own variables in the environment are not ours, and are never taken for typos...
    env = {"SLURM_JOB_ID": "4", "SLURM_CONTAINER": "x", "SBATCH_PARTITION": "p"}
    assert load_settings(None, env, {"RUNTIME": "slurm"}).settings.cluster_container == "none"
    # ...while a typo of one of our keys is.
    with pytest.raises(ConfigError, match=r"^environment: unknown key CLUSTER_PARTITON; did you "
                                          "mean CLUSTER_PARTITION"):
        load_settings(None, {"CLUSTER_PARTITON": "gh200"}, {})


def test_dry_run_line_is_a_shell_line() -> None:
    argv = srun_line(slurm(CLUSTER_SRUN_ARGS="--comment='a b'"))
    assert shlex.split(shlex.join(argv)) == argv and "--comment=a b" in argv


def test_compare_dry_run_prints_every_srun_line_without_an_allocation(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"RUNTIME": "slurm", "SIMULATE": "true", "IB_DEVICE": "", "HF_HUB_OFFLINE": "1",
                "BENCH_DATASET": "random-ids", "SGLBENCH_ENV_FILE": str(tmp_path / "none.env"),
                "RESULTS_DIR": str(tmp_path / "results"), "RUN_DIR": str(tmp_path / "run")})
    (tmp_path / "none.env").write_text("")
    invoke = str(Path(sys.executable).with_name("invoke"))
    done = subprocess.run([invoke, "compare", "--dry-run", "--modes", "pd"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sruns = [line for line in done.stdout.splitlines() if line.startswith("srun ")]
    assert [shlex.split(line)[5] for line in sruns] == ["--nodelist=<node1>", "--nodelist=<node2>"]
    assert "--prefill http://<node1>:30000 8998" in done.stdout.replace("'", "")
    assert not (tmp_path / "results").exists() and not (tmp_path / "run").exists()


def test_batch_job_asks_for_the_nodes_of_the_widest_topology(tmp_path: Path) -> None:
    settings = slurm(None, RUN_DIR=str(tmp_path / "run"))
    plan = [Topology.aggregated(1), Topology.disaggregated(2, 1)]
    path, text = batch_job(settings, plan, ["invoke", "compare"], tmp_path, "S1",
                           check_cluster=False)  # fmt: skip
    assert path == tmp_path / "run" / "slurm" / "jobs" / "S1" / "job.sbatch"
    assert "#SBATCH --nodes=3" in text.splitlines()  # 2P1D split, one GPU per node
    assert f"#SBATCH --output={tmp_path}/run/slurm/jobs/S1/job-%j.out" in text.splitlines()
    assert not (tmp_path / "run").exists()  # nothing written before the submit
    with pytest.raises(ConfigError, match=r"^invoke submit: no role of agg, 1P1D runs on Slurm "
                                          r"\(RUNTIME=process\)"):
        batch_job(load_settings(None, {}, {"RUNTIME": "process"}).settings,
                  [Topology.aggregated(1), PD], ["true"], tmp_path, "S2", check_cluster=False)
