"""Where a run's numbers came from: versions, the image, each worker's server_info, GPUs, git.

Gathered by execution into the run's ``RunRecord`` (``sglbench.record.schema``). Docker images:
when a role runs in docker, ``versions`` also holds ``image`` (SGLANG_IMAGE) and, per engine,
``image_id@<engine>`` and ``image_digest@<engine>`` (``sglbench.execute.docker.image_versions``);
an engine that does not answer shows ``unavailable (why)`` and the run goes on.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sglbench
from sglbench.execute.http import http_get
from sglbench.plan.servers import server_specs
from sglbench.plan.sweep import setup_of, workload_of
from sglbench.record.schema import SCHEMA_VERSION, ModeRecord, RunRecord, now
from sglbench.settings import Settings, public_settings
from sglbench.types import Topology

_PACKAGES = ("sglang", "sglang-router", "smg", "sglbench")


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Secret values of the settings (to be scrubbed wherever they show up)."""
    token = settings.hf_token.get_secret_value() if settings.hf_token else ""
    return (token,) if token else ()


def versions(settings: Settings) -> dict[str, str | None]:
    """Versions of the packages that shape the numbers, plus the docker image if used."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["sglbench"] = found["sglbench"] or sglbench.__version__  # a checkout, not installed
    if settings.roles_on("docker"):
        # Imported here: the docker SDK is needed only when a role runs in a container.
        from sglbench.execute.docker import image_versions

        found.update(image_versions(settings))  # never raises: "unavailable" when unreachable
    return found


def server_infos(settings: Settings, topology: Topology) -> dict[str, Any]:
    """Each worker's ``/server_info`` (else ``/get_server_info``), asked of the worker itself.

    Keys are the role (``agg``, ``prefill``, ``decode``), or ``prefill-1`` ... with several
    workers of a role. The router hides this from the bench client, hence the direct ask.
    """
    infos: dict[str, Any] = {}
    for role in topology.workers:
        specs = server_specs(settings, role, topology)
        for spec in specs:
            key = role if len(specs) == 1 else f"{role}-{spec.index}"
            infos[key] = {"url": spec.url, "error": "no answer"}
            for path in ("/server_info", "/get_server_info"):
                answer = http_get(spec.url + path, timeout_s=5.0)
                if answer.status == 200 and isinstance(answer.body, dict):
                    infos[key] = answer.body
                    break
    return infos


def gpu_info() -> list[dict[str, str]] | str:
    """GPUs of this host from nvidia-smi, or ``"none"``."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "none"
    fields = "index,name,memory.total,driver_version"
    try:
        out = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "none"
    names = fields.split(",")
    return [dict(zip(names, (v.strip() for v in line.split(",")), strict=False))
            for line in out.splitlines() if line.strip()] or "none"


def git_commit(cwd: Path | None = None) -> str | None:
    """The checkout's commit (``+dirty`` with local changes), None outside git."""
    where = cwd or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def new_record(settings: Settings, *, run_id: str, modes: Sequence[ModeRecord]) -> RunRecord:
    """The record of a new run (servers and points are filled in as the run goes)."""
    slurm = None
    if settings.roles_on("slurm"):
        from sglbench.execute.slurm_jobs import slurm_record  # only where a role is on Slurm

        slurm = slurm_record(settings, [m.topology for m in modes],
                             Path(settings.results_dir) / run_id)  # fmt: skip
    return RunRecord(
        schema=SCHEMA_VERSION,
        run_id=run_id,
        started=now(),
        simulated=settings.simulate,
        modes=list(modes),
        workload=workload_of(settings),
        setup=setup_of(settings),
        settings=public_settings(settings),
        versions=versions(settings),
        git_commit=git_commit(),
        gpus=gpu_info(),
        slurm=slurm,
    )
