"""Pure builder: Settings + ServerSpec -> the container a server runs in (plain data, no I/O).

By default the container equals what the original ``docker run`` scripts started: GPUs (``all``
for agg, ``device=0`` per PD role), ``--ipc=host``, ``--shm-size=32g``, host networking and
``--privileged`` for prefill/decode, a port mapping for agg, the HF cache mounted at
``/root/.cache/huggingface`` with ``HF_HOME``. Added: ``--init`` (so ``stop`` is instant), labels
(so ``status``/``down`` find exactly ours), ``HF_TOKEN`` as an environment variable only, and
``/dev/infiniband`` + an unlimited memlock ulimit when a PD role asks for RDMA.

``docker_run_command`` prints the equivalent ``docker run`` line (``--dry-run``); ``run_kwargs``
gives the same container to the docker SDK. The command comes from ``ServerSpec.argv``, the
builder the process runtime uses, so both runtimes start the same server.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from sglbench.display import MASK, mask_args
from sglbench.errors import ConfigError
from sglbench.plan.servers import ServerSpec
from sglbench.settings import Settings
from sglbench.types import Role

HF_CACHE_IN_CONTAINER = "/root/.cache/huggingface"
# Endpoints whose engine runs on this machine, so a path here is a path there too.
_LOCAL_SCHEMES = ("unix://", "npipe://")
IB_DEVICE_PATH = "/dev/infiniband"

# Label keys: ``LABEL_PROJECT=PROJECT`` marks a container as started by sglbench.
LABEL_PROJECT = "sglbench.project"
PROJECT = "sglbench"
LABEL_ROLE = "sglbench.role"
LABEL_RUN_ID = "sglbench.run-id"
LABEL_NAME = "sglbench.name"
LABEL_URL = "sglbench.url"


@dataclass(frozen=True)
class ContainerSpec:
    """One server container: everything ``docker run`` needs, nothing decided later."""

    name: str
    role: Role
    image: str
    command: tuple[str, ...]
    endpoint: str  # "" = the local engine, else ssh://user@host[:port]
    gpus: str | None  # "all", "0", "0,1"; None = no GPU request
    ipc_mode: str
    shm_size: str
    host_network: bool
    privileged: bool
    ports: tuple[tuple[int, int], ...]  # (host port, container port)
    volumes: tuple[tuple[str, str], ...]  # (host path, container path)
    environment: tuple[tuple[str, str], ...]
    devices: tuple[str, ...]
    memlock_unlimited: bool
    init: bool
    labels: tuple[tuple[str, str], ...]
    # Kept out of repr and labels; only run_kwargs sees the value.
    hf_token: SecretStr | None = field(default=None, repr=False)

    @property
    def label_map(self) -> dict[str, str]:
        """Labels as a dict."""
        return dict(self.labels)


def wants_rdma(settings: Settings, role: Role) -> bool:
    """True when a PD role moves KV over RDMA: IB_DEVICE set and a real transfer backend."""
    return role != "agg" and bool(settings.ib_device) and settings.transfer_backend != "fake"


def hf_cache_source(hf_cache_dir: str, role: Role, endpoint: str) -> str:
    """The host side of the HF cache mount, as the role's docker engine must see it.

    Args:
        hf_cache_dir: HF_CACHE_DIR as set.
        role: The server role (names its ``*_DOCKER_HOST`` key in errors).
        endpoint: The role's docker endpoint ("" = the local engine).

    Returns:
        For a local engine, the path with ``~`` expanded here and made absolute (a relative
        ``-v`` source would be a named volume); for a remote engine, the path unchanged.

    Raises:
        ConfigError: the engine is remote and the path starts with ``~`` or is relative: this
            machine cannot know that node's home or working directory.
    """
    if not endpoint or endpoint.startswith(_LOCAL_SCHEMES):
        return str(Path(hf_cache_dir).expanduser().absolute())
    if not hf_cache_dir.startswith("/"):
        key = f"{role.upper()}_DOCKER_HOST"
        raise ConfigError(
            f"HF_CACHE_DIR={hf_cache_dir} is not absolute, but {key}={endpoint} is a remote "
            "engine (~ or a relative path would be resolved on this machine, not on that node); "
            "give the absolute path on that node, e.g. HF_CACHE_DIR=/home/USER/.cache/huggingface")
    return hf_cache_dir


def container_spec(settings: Settings, spec: ServerSpec, run_id: str = "") -> ContainerSpec:
    """The container of one server worker.

    Args:
        settings: Validated settings (image, GPUs, shm, HF cache, token, RDMA).
        spec: The server worker (its argv, port, role, endpoint, GPU ids).
        run_id: Run id written into the labels ("" for a dry run: no run-id label).

    Returns:
        The container spec; HF_CACHE_DIR's ``~`` is expanded here only for a local engine.

    Raises:
        ConfigError: HF_CACHE_DIR is not absolute and the role's engine is remote.
    """
    pd = spec.role != "agg"
    labels = {LABEL_PROJECT: PROJECT, LABEL_ROLE: spec.role, LABEL_NAME: spec.name,
              LABEL_URL: spec.url}
    if run_id:
        labels[LABEL_RUN_ID] = run_id
    rdma = wants_rdma(settings, spec.role)
    return ContainerSpec(
        name=spec.name,
        role=spec.role,
        image=settings.sglang_image,
        command=tuple(spec.argv("python3")),
        endpoint=spec.docker_host,
        gpus=spec.gpus if settings.docker_gpus and spec.gpus else None,
        ipc_mode="host",
        shm_size=settings.shm_size,
        host_network=pd,
        privileged=pd and settings.docker_privileged,
        # Agg keeps the original port mapping; the server listens on the same port inside.
        ports=() if pd else ((spec.port, spec.port),),
        volumes=((hf_cache_source(settings.hf_cache_dir, spec.role, spec.docker_host),
                  HF_CACHE_IN_CONTAINER),),
        environment=(("HF_HOME", HF_CACHE_IN_CONTAINER),),
        devices=(IB_DEVICE_PATH,) if rdma else (),
        memlock_unlimited=rdma,
        init=True,
        labels=tuple(labels.items()),
        hf_token=settings.hf_token,
    )


def _gpu_flag(gpus: str) -> str:
    return "all" if gpus == "all" else f'"device={gpus}"'


def _device_request(gpus: str) -> dict[str, Any]:
    if gpus == "all":
        return {"count": -1, "capabilities": [["gpu"]]}
    return {"device_ids": [g.strip() for g in gpus.split(",") if g.strip()],
            "capabilities": [["gpu"]]}


def docker_run_command(cspec: ContainerSpec) -> str:
    """The equivalent ``docker run -d ...`` command, one option per line (HF_TOKEN masked).

    Args:
        cspec: The container spec.

    Returns:
        A shell command line, quoted so it can be pasted, to compare with the old scripts.
    """
    opts: list[list[str]] = [["--name", cspec.name]]
    if cspec.init:
        opts.append(["--init"])
    if cspec.gpus:
        opts.append(["--gpus", _gpu_flag(cspec.gpus)])
    opts += [[f"--ipc={cspec.ipc_mode}"], [f"--shm-size={cspec.shm_size}"]]
    if cspec.privileged:
        opts.append(["--privileged"])
    if cspec.host_network:
        opts.append(["--network=host"])
    opts += [["-p", f"{host}:{inner}"] for host, inner in cspec.ports]
    opts += [["-v", f"{host}:{inner}"] for host, inner in cspec.volumes]
    opts += [["-e", f"{key}={value}"] for key, value in cspec.environment]
    if cspec.hf_token is not None:
        opts.append(["-e", f"HF_TOKEN={MASK}"])
    opts += [["--device", dev] for dev in cspec.devices]
    if cspec.memlock_unlimited:
        opts.append(["--ulimit", "memlock=-1:-1"])
    opts += [["--label", f"{key}={value}"] for key, value in cspec.labels]
    lines = ["docker run -d"]
    lines += [" ".join(shlex.quote(part) for part in opt) for opt in opts]
    lines.append(shlex.quote(cspec.image))
    lines.append(shlex.join(mask_args(cspec.command)))
    prefix = f"DOCKER_HOST={shlex.quote(cspec.endpoint)} " if cspec.endpoint else ""
    return prefix + " \\\n  ".join(lines)


def run_kwargs(cspec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for the SDK: ``containers.create(**kw)`` (or ``run(detach=True, **kw)``).

    Args:
        cspec: The container spec.

    Returns:
        The SDK's arguments, HF_TOKEN in ``environment`` with its real value.
    """
    environment: dict[str, str] = dict(cspec.environment)
    if cspec.hf_token is not None:
        environment["HF_TOKEN"] = cspec.hf_token.get_secret_value()
    kwargs: dict[str, Any] = {
        "image": cspec.image,
        "command": list(cspec.command),
        "name": cspec.name,
        "init": cspec.init,
        "ipc_mode": cspec.ipc_mode,
        "shm_size": cspec.shm_size,
        "privileged": cspec.privileged,
        "volumes": {host: {"bind": inner, "mode": "rw"} for host, inner in cspec.volumes},
        "environment": environment,
        "labels": cspec.label_map,
    }
    if cspec.host_network:
        kwargs["network_mode"] = "host"
    else:
        kwargs["ports"] = {f"{inner}/tcp": host for host, inner in cspec.ports}
    if cspec.gpus:
        kwargs["device_requests"] = [_device_request(cspec.gpus)]
    if cspec.devices:
        kwargs["devices"] = [f"{dev}:{dev}:rwm" for dev in cspec.devices]
    if cspec.memlock_unlimited:
        kwargs["ulimits"] = [{"name": "memlock", "soft": -1, "hard": -1}]
    return kwargs


def is_ours(labels: Mapping[str, str] | None) -> bool:
    """True if a container's labels say sglbench started it."""
    return bool(labels) and (labels or {}).get(LABEL_PROJECT) == PROJECT
