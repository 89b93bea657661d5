"""Pure builders: Settings -> server, router and bench specs (plain data, no I/O).

The argument lists equal what the original scripts ran for the same settings
(``scripts/10_run_agg_server.sh`` ... ``24_bench_pd_disagg.sh``), plus what they left implicit:
the bootstrap port for the router, a private Prometheus port, the seed, range ratio and warmup of
the bench client (whose defaults changed between versions), the same EOS handling for agg and
PD. ``tests/unit/test_specs.py`` names every difference.
``--dry-run`` prints these; executors run them and never decide flags.
"""

from __future__ import annotations

import itertools
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sglbench.settings import Role, RouterImpl, Runtime, Settings

SGLANG_SERVER_MODULE = "sglang.launch_server"
SIM_SERVER_MODULE = "sglbench.sim"
BENCH_MODULE = "sglang.benchmark.serving"
ROUTER_MODULES: dict[RouterImpl, str] = {
    "rust": "sglang_router.launch_router",
    "mini-lb": "sglang_router.launch_router",
    "smg": "smg.launch_router",
}
Mode = Literal["agg", "pd"]


class _Command:
    """What a server and the router share: ``python -m <module> <args>``, answering at host:port."""

    host: str
    port: int
    module: str
    args: tuple[str, ...]

    @property
    def url(self) -> str:
        """Base URL clients (and, for workers, the router) use."""
        return f"http://{self.host}:{self.port}"

    def argv(self, python: str = "python3") -> list[str]:
        """The full command line, ``python3 -m <module> <args>``."""
        return [python, "-m", self.module, *self.args]


@dataclass(frozen=True)
class ServerSpec(_Command):
    """One SGLang server (or simulator) process: what to run and where it answers."""

    role: Role
    index: int
    name: str
    host: str
    port: int
    bootstrap_port: int | None
    module: str
    args: tuple[str, ...]
    runtime: Runtime
    docker_host: str
    gpus: str


@dataclass(frozen=True)
class RouterSpec(_Command):
    """The PD router process in front of the prefill and decode workers."""

    impl: RouterImpl
    module: str
    args: tuple[str, ...]
    host: str
    port: int


@dataclass(frozen=True)
class SweepPoint:
    """One workload point of a sweep (the cross product of the BENCH_* lists)."""

    input_len: int
    output_len: int
    max_concurrency: int
    request_rate: float

    @property
    def label(self) -> str:
        """Short stable name, e.g. ``in512_out128_c200_rinf``."""
        rate = "inf" if math.isinf(self.request_rate) else f"{self.request_rate:g}"
        return f"in{self.input_len}_out{self.output_len}_c{self.max_concurrency}_r{rate}"


def sweep_points(settings: Settings) -> list[SweepPoint]:
    """Cross product of BENCH_INPUT_LEN x BENCH_OUTPUT_LEN x BENCH_MAX_CONCURRENCY x RATE.

    Each point once, in first-seen order: a list such as ``8,8`` must not measure a point twice
    (bench and compare alike).
    """
    product = itertools.product(
        settings.bench_input_len,
        settings.bench_output_len,
        settings.bench_max_concurrency,
        settings.bench_request_rate,
    )
    return list(dict.fromkeys(SweepPoint(i, o, c, r) for i, o, c, r in product))


def _role_host_port(settings: Settings, role: Role, index: int) -> tuple[str, int]:
    if role == "agg":
        return settings.agg_host, settings.agg_port
    if role == "prefill":
        return settings.prefill_host, settings.prefill_port + index
    return settings.decode_host, settings.decode_port + index


def workers(settings: Settings, role: Role) -> int:
    """How many servers of a role a run starts."""
    return {"agg": 1, "prefill": settings.num_prefill, "decode": settings.num_decode}[role]


def launch_args(settings: Settings, role: Role, index: int = 0) -> list[str]:
    """``sglang.launch_server`` arguments for one worker of a role."""
    _, port = _role_host_port(settings, role, index)
    args = ["--model-path", settings.model_path]
    if settings.tokenizer_path:
        args += ["--tokenizer-path", settings.tokenizer_path]
    args += ["--host", settings.server_bind_host, "--port", str(port)]
    args += ["--mem-fraction-static", f"{settings.role_mem_fraction(role):g}"]
    if role != "agg":
        args += ["--disaggregation-mode", role]
        if settings.ib_device:
            args += ["--disaggregation-ib-device", settings.ib_device]
        if settings.transfer_backend != "mooncake":
            args += ["--disaggregation-transfer-backend", settings.transfer_backend]
    if role == "prefill":
        args += ["--disaggregation-bootstrap-port", str(settings.bootstrap_port + index)]
    if settings.simulate:
        args += ["--sim-profile", settings.sim_profile, *shlex.split(settings.sim_args)]
    args += shlex.split(settings.extra_server_args)
    args += shlex.split(getattr(settings, f"{role}_extra_args"))
    return args


def server_specs(settings: Settings, role: Role) -> list[ServerSpec]:
    """Every worker of a role (one for agg; NUM_PREFILL / NUM_DECODE for PD)."""
    count = workers(settings, role)
    specs = []
    for index in range(count):
        host, port = _role_host_port(settings, role, index)
        specs.append(
            ServerSpec(
                role=role,
                index=index,
                name=f"sglang-{role}" + (f"-{index}" if count > 1 else ""),
                host=host,
                port=port,
                bootstrap_port=settings.bootstrap_port + index if role == "prefill" else None,
                module=SIM_SERVER_MODULE if settings.simulate else SGLANG_SERVER_MODULE,
                args=tuple(launch_args(settings, role, index)),
                runtime=settings.role_runtime(role),
                docker_host=getattr(settings, f"{role}_docker_host"),
                gpus=_worker_gpus(getattr(settings, f"{role}_gpus"), index, count),
            )
        )
    return specs


def _worker_gpus(gpus: str, index: int, count: int) -> str:
    """GPU ids of worker ``index``: with several workers and a list of ids, one id each."""
    ids = [g for g in gpus.split(",") if g]
    if count > 1 and len(ids) >= count:
        return ids[index]
    return gpus


def router_spec(settings: Settings) -> RouterSpec:
    """The PD router over every prefill and decode worker (bootstrap ports explicit)."""
    args: list[str] = ["--mini-lb"] if settings.router_impl == "mini-lb" else []
    args.append("--pd-disaggregation")
    for spec in server_specs(settings, "prefill"):
        args += ["--prefill", spec.url, str(spec.bootstrap_port)]
    for spec in server_specs(settings, "decode"):
        args += ["--decode", spec.url]
    args += ["--host", settings.router_bind_host, "--port", str(settings.router_port)]
    if settings.router_impl != "mini-lb":
        # Both Rust routers bind Prometheus on 0.0.0.0:29000 by default; a second one panics.
        args += ["--prometheus-host", "127.0.0.1",
                 "--prometheus-port", str(settings.router_prometheus_port)]
    args += shlex.split(settings.router_extra_args)
    return RouterSpec(
        impl=settings.router_impl,
        module=ROUTER_MODULES[settings.router_impl],
        args=tuple(args),
        host=settings.router_host,
        port=settings.router_port,
    )


def bench_args(
    settings: Settings,
    *,
    base_url: str,
    tag: str,
    output_file: Path,
    pd: bool,
    point: SweepPoint | None = None,
) -> list[str]:
    """``sglang.benchmark.serving`` arguments; the same workload flags for agg and PD."""
    point = point or sweep_points(settings)[0]
    rate = "inf" if math.isinf(point.request_rate) else f"{point.request_rate:g}"
    args = [
        "--backend", settings.bench_backend,
        "--dataset-name", settings.bench_dataset,
        "--num-prompts", str(settings.bench_num_prompts),
        "--random-input-len", str(point.input_len),
        "--random-output-len", str(point.output_len),
        "--request-rate", rate,
        "--max-concurrency", str(point.max_concurrency),
    ]
    if pd:
        args.append("--pd-separated")
    args += ["--base-url", base_url, "--output-file", str(output_file), "--tag", tag]
    if not settings.bench_ignore_eos:
        # The client ignores EOS by default and has no --ignore-eos flag (0.5.23 rejects it).
        args.append("--disable-ignore-eos")
    args += [
        "--random-range-ratio", f"{settings.bench_range_ratio:g}",
        "--seed", str(settings.bench_seed),
        "--warmup-requests", str(settings.bench_warmup_requests),
    ]
    if settings.bench_dataset_path:
        args += ["--dataset-path", settings.bench_dataset_path]
    if settings.tokenizer_path:
        args += ["--tokenizer", settings.tokenizer_path]
    if settings.bench_rust_client:
        args.append("--rust-client")
    args += shlex.split(settings.bench_extra_args)
    return args
