"""Pure builders: Settings -> the server workers of a role (plain data, no I/O).

The argument lists equal what the original scripts ran for the same settings
(``scripts/10_run_agg_server.sh`` ... ``21_run_decode_container.sh``), plus the bootstrap port
made explicit. ``tests/unit/test_specs.py`` names every difference. ``--dry-run`` prints these;
runtimes run them and never decide flags.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sglbench.plan.placement import place
from sglbench.plan.topology import from_settings, worker_gpus
from sglbench.settings import Settings
from sglbench.types import Role, RuntimeName, Service, Topology

SGLANG_SERVER_MODULE = "sglang.launch_server"
SIM_SERVER_MODULE = "sglbench.sim"


@dataclass(frozen=True, kw_only=True)
class Command:
    """What a runtime starts: ``python -m <module> <args>``, answering at host:port."""

    name: str
    role: Service
    host: str
    port: int
    module: str
    args: tuple[str, ...]
    runtime: RuntimeName = "process"
    docker_host: str = ""  # the docker engine ("" = local), for the docker runtime
    gpus: str = ""  # "all" or GPU ids; "" = none
    env: tuple[tuple[str, str], ...] = ()  # added to the inherited environment

    @property
    def url(self) -> str:
        """Base URL clients (and, for workers, the router) use."""
        return f"http://{self.host}:{self.port}"

    def argv(self, python: str = "python3") -> list[str]:
        """The full command line, ``python3 -m <module> <args>``."""
        return [python, "-m", self.module, *self.args]


@dataclass(frozen=True, kw_only=True)
class ServerSpec(Command):
    """One SGLang server (or simulator) worker of a role."""

    role: Role
    index: int
    bootstrap_port: int | None


def launch_args(settings: Settings, role: Role, index: int = 0, tp: int = 1) -> list[str]:
    """``sglang.launch_server`` arguments for one worker of a role (``--tp-size`` above 1)."""
    own = settings.role(role)
    args = ["--model-path", settings.model_path]
    if settings.tokenizer_path:
        args += ["--tokenizer-path", settings.tokenizer_path]
    args += ["--host", settings.server_bind_host, "--port", str(own.port + index)]
    args += ["--mem-fraction-static", f"{own.mem_fraction:g}"]
    if tp > 1:
        args += ["--tp-size", str(tp)]
    if role != "agg":
        args += ["--disaggregation-mode", role]
        if settings.ib_device:
            args += ["--disaggregation-ib-device", settings.ib_device]
        if settings.transfer_backend != "mooncake":
            args += ["--disaggregation-transfer-backend", settings.transfer_backend]
    if role == "prefill":
        args += ["--disaggregation-bootstrap-port", str(settings.bootstrap_port + index)]
    if settings.bench_server_metrics:  # /metrics for the per-point scrapes (issue 11)
        args.append("--enable-metrics")
    if settings.simulate:
        args += ["--sim-profile", settings.sim_profile, *shlex.split(settings.sim_args)]
    args += shlex.split(settings.extra_server_args)
    args += shlex.split(own.extra_args)
    return args


def server_specs(settings: Settings, role: Role,
                 topology: Topology | None = None) -> list[ServerSpec]:
    """Every worker of a role in ``topology`` (default: NUM_AGG / NUM_PREFILL / NUM_DECODE).

    Worker i listens on the role's PORT+i and holds its own slice of the role's GPU ids; on the
    process runtime those become its CUDA_VISIBLE_DEVICES (the simulator ignores them). On Slurm,
    the placement decides each worker's node (its URL host) and GPUs instead.
    """
    own = settings.role(role)
    topology = topology or from_settings(settings, "agg" if role == "agg" else "pd")
    count, tp = topology.workers[role], topology.tp(role)
    slots = ({s.index: s for s in place(settings, topology) if s.role == role}
             if own.runtime == "slurm" else {})  # fmt: skip
    specs = []
    for index in range(count):
        slot = slots.get(index)
        gpus = slot.gpu_ids if slot else worker_gpus(own.gpus, index, tp, count)
        env = (() if settings.simulate or own.runtime != "process" or gpus == "all"
               else (("CUDA_VISIBLE_DEVICES", gpus),))  # fmt: skip
        specs.append(ServerSpec(
            role=role,
            index=index,
            name=f"sglang-{role}" + (f"-{index}" if count > 1 else ""),
            host=slot.node if slot else own.host,
            port=own.port + index,
            bootstrap_port=settings.bootstrap_port + index if role == "prefill" else None,
            module=SIM_SERVER_MODULE if settings.simulate else SGLANG_SERVER_MODULE,
            args=tuple(launch_args(settings, role, index, tp)),
            runtime=own.runtime,
            docker_host=own.docker_host,
            gpus=gpus,
            env=env,
        ))  # fmt: skip
    return specs
