"""Pure builders for Slurm: the ``srun`` line of a server step and the ``sbatch`` script.

A server is one job step on its node (``plan.placement``): ``srun --overlap --nodes=1 --ntasks=1
--nodelist=NODE`` named ``sglb-<run id>-<role>-<index>`` (so ``status`` and ``down`` find exactly
ours), its output in a file under RUN_DIR. ``--overlap`` lets several servers share a node; no
gres flag is given, since overlapping steps with one would share the same GPU: the step inherits
the job's GPUs and ``CUDA_VISIBLE_DEVICES`` picks the worker's own (notes/slurm.md, section 3).
Containers: pyxis adds ``--container-image``/``--container-mounts`` to srun; apptainer wraps the
command in ``apptainer exec --nv``. Runtimes run these lines and never decide flags.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from sglbench.plan.container import HF_CACHE_IN_CONTAINER
from sglbench.plan.servers import ServerSpec
from sglbench.settings import Settings

STEP_PREFIX = "sglb"
# The interpreter inside an SGLang image (lmsysorg/sglang has python3 on PATH).
CONTAINER_PYTHON = "python3"


def step_name(run_id: str, spec: ServerSpec) -> str:
    """The job-step name of a server: ``sglb-<run id>-<role>-<index>``."""
    return f"{STEP_PREFIX}-{run_id}-{spec.role}-{spec.index}"


def container_image(settings: Settings) -> str:
    """The image of container steps: CLUSTER_CONTAINER_IMAGE, else SGLANG_IMAGE.

    Apptainer needs a scheme for a registry image (``docker://``); a path (``.sif``) or an image
    with a scheme is kept as it is.
    """
    image = settings.cluster_container_image or settings.sglang_image
    if settings.cluster_container != "apptainer":
        return image
    if "://" in image or image.startswith(("/", ".")) or image.endswith(".sif"):
        return image
    return f"docker://{image}"


def container_mounts(settings: Settings) -> list[str]:
    """``SRC:DST`` mounts of container steps: the HF cache, then CLUSTER_CONTAINER_MOUNTS."""
    cache = str(Path(settings.hf_cache_dir).expanduser())
    extra = [m for m in settings.cluster_container_mounts.split(",") if m]
    return [f"{cache}:{HF_CACHE_IN_CONTAINER}", *extra]


def step_command(settings: Settings, spec: ServerSpec, python: str) -> list[str]:
    """What the step runs: ``env CUDA_VISIBLE_DEVICES=... python -m <module> <args>``.

    ``env`` (not srun's --export) sets the GPU ids: Slurm sets CUDA_VISIBLE_DEVICES in the step
    after exporting ours, so only a wrapper inside the step gets the last word.
    """
    env = [("PYTHONUNBUFFERED", "1")]  # slurmstepd writes the log: no block buffering
    if spec.gpus:
        env.insert(0, ("CUDA_VISIBLE_DEVICES", spec.gpus))
    if settings.cluster_container != "none":
        env.append(("HF_HOME", HF_CACHE_IN_CONTAINER))
    env += list(spec.env)
    prefix = ["env", *(f"{k}={v}" for k, v in env)]
    if settings.cluster_container == "none":
        return [*prefix, *spec.argv(python)]
    inner = spec.argv(CONTAINER_PYTHON)
    if settings.cluster_container == "pyxis":
        return [*prefix, *inner]
    binds = ",".join(container_mounts(settings))
    return [*prefix, "apptainer", "exec", "--nv", "--bind", binds, container_image(settings),
            *inner]  # fmt: skip


def srun_argv(settings: Settings, spec: ServerSpec, *, job_id: str, name: str, output: Path,
              python: str) -> list[str]:  # fmt: skip
    """The whole ``srun`` line of one server step.

    Args:
        settings: container, extra srun args.
        spec: the server; its host is its node (``plan.placement``).
        job_id: the allocation's job id.
        name: the step name (``step_name``).
        output: the step's log file (stdout and stderr), on a file system the node shares.
        python: the interpreter on the nodes (without a container).
    """
    argv = ["srun", f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1",
            f"--nodelist={spec.host}", f"--job-name={name}", f"--output={output}"]
    if settings.cluster_container == "pyxis":
        argv += [f"--container-image={container_image(settings)}",
                 f"--container-mounts={','.join(container_mounts(settings))}"]
    argv += shlex.split(settings.cluster_srun_args)
    return argv + step_command(settings, spec, python)


def sbatch_script(settings: Settings, *, name: str, nodes: int, nodelist: Sequence[str],
                  output: Path, workdir: Path, command: Sequence[str]) -> str:  # fmt: skip
    """The batch script of ``invoke submit``: the allocation, then ``command`` in ``workdir``.

    The job runs with the submitter's environment (sbatch exports it), so the same ``.env`` and
    variables apply inside. ``--exclusive``: a benchmark shares its nodes with nobody.
    """
    options = [f"--job-name={name}", f"--nodes={nodes}", "--ntasks-per-node=1", "--exclusive",
               f"--gpus-per-node={settings.cluster_gpus_per_node}",
               f"--time={settings.cluster_time_limit}", f"--output={output}"]  # fmt: skip
    if nodelist:
        options.append(f"--nodelist={','.join(nodelist)}")
    if settings.cluster_partition:
        options.append(f"--partition={settings.cluster_partition}")
    if settings.cluster_account:
        options.append(f"--account={settings.cluster_account}")
    lines = ["#!/bin/bash",
             "# Written by `invoke submit` (sglbench): the comparison inside this allocation.",
             "# Resubmit with: sbatch THIS_FILE",
             *(f"#SBATCH {shlex.quote(o)}" for o in options)]  # fmt: skip
    if settings.cluster_sbatch_args:
        lines.append(f"#SBATCH {settings.cluster_sbatch_args}")
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(workdir))}",
              f"exec {shlex.join(command)}", ""]  # fmt: skip
    return "\n".join(lines)
