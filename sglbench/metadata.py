"""The ``metadata.json`` sidecar of a run directory (``results/<run-id>/``).

Shape (the harness contract): ``run_id, started, ended, simulated, workload, settings (secrets
removed), versions, servers ({worker: its /server_info}), git_commit, gpus_per_mode,
forced_mismatch, points`` plus ``modes``, ``gpus``, ``resumed``, ``interrupted`` and ``setup``
(BENCH_BACKEND, MODEL_PATH, ...: what a resume checks besides the workload). Everything is written
through ``scrub`` so no secret value (HF_TOKEN, ...) reaches the file even when a server echoes
it back.

Docker images: when a role runs in docker, ``versions`` also holds ``image`` (SGLANG_IMAGE) and,
per engine, ``image_id@<engine>`` and ``image_digest@<engine>`` (``sglbench.runtime.docker.
image_versions``); an engine that does not answer shows ``unavailable (why)`` and the run goes on.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sglbench
from sglbench.lifecycle import MODE_ROLES
from sglbench.readiness import http_get
from sglbench.results import METADATA_FILE
from sglbench.settings import ROLES, Settings, is_secret, public_settings
from sglbench.specs import Mode, server_specs

_PACKAGES = ("sglang", "sglang-router", "smg", "sglbench")
_MASK = "********"


def now() -> str:
    """The current time, ISO 8601 with the UTC offset."""
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def workload(settings: Settings) -> dict[str, Any]:
    """What both modes must share for a fair comparison (the fingerprint of a run).

    The concurrency list is left out on purpose: it is the load axis, so a resumed run may add
    concurrency points to the same workload.
    """
    return {
        "dataset": settings.bench_dataset,
        "dataset_path": settings.bench_dataset_path,
        "num_prompts": settings.bench_num_prompts,
        "input_len": list(settings.bench_input_len),
        "output_len": list(settings.bench_output_len),
        "range_ratio": settings.bench_range_ratio,
        "seed": settings.bench_seed,
        "ignore_eos": settings.bench_ignore_eos,
        "warmup": settings.bench_warmup_requests,
        "request_rate": list(settings.bench_request_rate),
    }


def setup(settings: Settings) -> dict[str, Any]:
    """What serves and measures the workload: a resumed run must not change it unnoticed.

    Keyed by the settings keys, so a mismatch names what to set back.
    """
    return {
        "BENCH_BACKEND": settings.bench_backend,
        "MODEL_PATH": settings.model_path,
        "TOKENIZER_PATH": settings.tokenizer_path,
        "SIMULATE": settings.simulate,
        "SIM_PROFILE": settings.sim_profile,
        "ROUTER_IMPL": settings.router_impl,
    }


def set_point(meta: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Put a point's record into ``meta["points"]``, replacing an older one of the same tag.

    A re-measured point (a failure retried by ``--resume``) keeps one record, the newest, in
    the place of the old one.
    """
    points: list[dict[str, Any]] = meta["points"]
    for n, point in enumerate(points):
        if point.get("tag") == record["tag"]:
            points[n] = dict(record)
            return
    points.append(dict(record))


def workload_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``KEY: old -> new`` for every workload key that differs (after a JSON round trip)."""
    a, b = json.loads(json.dumps(dict(old))), json.loads(json.dumps(dict(new)))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with secret keys masked and any secret string replaced, recursively."""
    if isinstance(value, Mapping):
        return {k: _MASK if is_secret(str(k).upper()) and v not in (None, "")
                else scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, _MASK)
    return value


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
    if any(settings.role_runtime(role) == "docker" for role in ROLES):
        # Imported here: the docker SDK is needed only when a role runs in a container.
        from sglbench.runtime.docker import image_versions

        found.update(image_versions(settings))  # never raises: "unavailable" when unreachable
    return found


def server_infos(settings: Settings, mode: Mode) -> dict[str, Any]:
    """Each worker's ``/server_info`` (else ``/get_server_info``), asked of the worker itself.

    Keys are the role (``agg``, ``prefill``, ``decode``), or ``prefill-1`` ... with several
    workers of a role. The router hides this from the bench client, hence the direct ask.
    """
    infos: dict[str, Any] = {}
    for role in MODE_ROLES[mode]:
        specs = server_specs(settings, role)
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
    where = cwd or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty.strip() else "")


def new_metadata(settings: Settings, *, run_id: str, modes: list[str],
                 gpus_per_mode: Mapping[str, int]) -> dict[str, Any]:
    """The metadata of a new run (servers and points are filled in as the run goes)."""
    return {
        "run_id": run_id,
        "started": now(),
        "ended": None,
        "simulated": settings.simulate,
        "modes": modes,
        "workload": workload(settings),
        "setup": setup(settings),
        "settings": public_settings(settings),
        "versions": versions(settings),
        "servers": {},
        "git_commit": git_commit(),
        "gpus": gpu_info(),
        "gpus_per_mode": dict(gpus_per_mode),
        "forced_mismatch": False,
        "interrupted": False,
        "resumed": [],
        "points": [],
    }


def write_metadata(run_dir: Path, metadata: Mapping[str, Any], settings: Settings) -> Path:
    """Write ``metadata.json`` atomically (a reader never sees half a file), secrets scrubbed."""
    path = run_dir / METADATA_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(scrub(metadata, secrets_of(settings)), indent=2) + "\n")
    os.replace(tmp, path)
    return path
