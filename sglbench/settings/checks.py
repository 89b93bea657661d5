"""Checks of several settings keys together; each raises one ``ConfigError`` naming the keys.

Three kinds: listeners of one PD deployment that would share a host:port (including the xPyD port
ranges, bootstrap ports and the router's metrics port); extra-args keys that repeat a flag a
dedicated key already sets (argparse keeps the last one, so the harness would wait on one port
while the server listens on another); and SIM_ARGS, checked by the simulator's own parser.
"""

from __future__ import annotations

import shlex
from typing import NamedTuple

from sglbench.errors import ConfigError
from sglbench.hosts import is_loopback, same_machine
from sglbench.settings.model import Settings
from sglbench.settings.workloads import check_workload_keys
from sglbench.types import MODE_KINDS, Role, Topology, parse_topology

_MAX_PORT = 65535

# Flags the builders set from a dedicated key: an extra-args key must not repeat them.
SERVER_FLAGS: dict[str, str] = {
    "--model-path": "MODEL_PATH",
    "--tokenizer-path": "TOKENIZER_PATH",
    "--host": "SERVER_BIND_HOST",
    "--port": "AGG_PORT/PREFILL_PORT/DECODE_PORT",
    "--mem-fraction-static": "AGG_/PREFILL_/DECODE_MEM_FRACTION",
    "--tp-size": "AGG_TP/PREFILL_TP/DECODE_TP",
    "--tensor-parallel-size": "AGG_TP/PREFILL_TP/DECODE_TP",
    "--disaggregation-mode": "the task (prefill or decode)",
    "--disaggregation-ib-device": "IB_DEVICE",
    "--disaggregation-transfer-backend": "TRANSFER_BACKEND",
    "--disaggregation-bootstrap-port": "BOOTSTRAP_PORT",
    "--sim-profile": "SIM_PROFILE",
}
ROUTER_FLAGS: dict[str, str] = {
    "--pd-disaggregation": "the pd-router task",
    "--prefill": "PREFILL_HOST/PREFILL_PORT/NUM_PREFILL",
    "--worker-urls": "AGG_HOST/AGG_PORT/NUM_AGG",
    "--policy": "ROUTER_POLICY",
    "--decode": "DECODE_HOST/DECODE_PORT/NUM_DECODE",
    "--host": "ROUTER_BIND_HOST",
    "--port": "ROUTER_PORT",
    "--mini-lb": "ROUTER_IMPL",
    "--prometheus-host": "ROUTER_PROMETHEUS_PORT (always 127.0.0.1)",
    "--prometheus-port": "ROUTER_PROMETHEUS_PORT",
}
BENCH_FLAGS: dict[str, str] = {
    "--backend": "BENCH_BACKEND",
    "--dataset-name": "BENCH_DATASET",
    "--dataset-path": "BENCH_DATASET_PATH",
    "--num-prompts": "BENCH_NUM_PROMPTS",
    "--random-input-len": "BENCH_INPUT_LEN",
    "--random-output-len": "BENCH_OUTPUT_LEN",
    "--request-rate": "BENCH_REQUEST_RATE",
    "--max-concurrency": "BENCH_MAX_CONCURRENCY",
    "--random-range-ratio": "BENCH_RANGE_RATIO",
    "--seed": "BENCH_SEED",
    "--warmup-requests": "BENCH_WARMUP_REQUESTS",
    "--disable-ignore-eos": "BENCH_IGNORE_EOS",
    "--tokenizer": "TOKENIZER_PATH",
    "--rust-client": "BENCH_RUST_CLIENT",
    "--goodput": "BENCH_SLO_TTFT_MS/BENCH_SLO_ITL_MS/BENCH_SLO_TPOT_MS/BENCH_SLO_E2E_MS",
    "--base-url": "the bench task (agg or router URL)",
    "--output-file": "RESULTS_DIR and --tag",
    "--tag": "the bench task's --tag",
    "--pd-separated": "the bench task (detected from the router)",
}
# srun/sbatch flags the Slurm builders set themselves (plan.slurm).
_STEP = "the Slurm runtime (one step per server)"
SRUN_FLAGS: dict[str, str] = {
    **dict.fromkeys(("--jobid", "--overlap", "--nodes", "-N", "--ntasks", "-n"), _STEP),
    **dict.fromkeys(("--nodelist", "-w"), "CLUSTER_PLACEMENT/AGG_NODES/PREFILL_NODES/DECODE_NODES"),
    **dict.fromkeys(("--job-name", "-J", "--output", "-o"), _STEP),
    "--container-image": "CLUSTER_CONTAINER_IMAGE",
    "--container-mounts": "CLUSTER_CONTAINER_MOUNTS",
}
SBATCH_FLAGS: dict[str, str] = {
    **dict.fromkeys(("--job-name", "-J", "--output", "-o"), "invoke submit"),
    **dict.fromkeys(("--nodes", "-N", "--nodelist", "-w"), "the topologies and placement"),
    "--gpus-per-node": "CLUSTER_GPUS_PER_NODE",
    **dict.fromkeys(("--time", "-t"), "CLUSTER_TIME_LIMIT"),
    **dict.fromkeys(("--partition", "-p"), "CLUSTER_PARTITION"),
    **dict.fromkeys(("--account", "-A"), "CLUSTER_ACCOUNT"),
}
# Flags the workload keys set (issue 11); refused in BENCH_EXTRA_ARGS like the ones above.
WORKLOAD_FLAGS: dict[str, str] = {
    "--gsp-num-groups": "BENCH_GSP_NUM_GROUPS",
    "--gsp-prompts-per-group": "BENCH_GSP_PROMPTS_PER_GROUP (or BENCH_NUM_PROMPTS)",
    "--gsp-system-prompt-len": "BENCH_GSP_SYSTEM_PROMPT_LEN",
    "--gsp-question-len": "BENCH_GSP_QUESTION_LEN",
    "--gsp-output-len": "BENCH_GSP_OUTPUT_LEN",
    "--sharegpt-output-len": "BENCH_SHAREGPT_OUTPUT_LEN",
    "--sharegpt-context-len": "BENCH_MODEL_CONTEXT_LEN",
    "--mooncake-slowdown-factor": "BENCH_TRACE_SLOWDOWN",
    "--use-trace-timestamps": "BENCH_DATASET=mooncake",
    "--flush-cache": "BENCH_FLUSH_CACHE",
    "--cache-report": "the bench task (always on with the Python client)",
}
_EXTRA_KEYS: dict[str, dict[str, str]] = {
    "EXTRA_SERVER_ARGS": SERVER_FLAGS,
    "AGG_EXTRA_ARGS": SERVER_FLAGS,
    "PREFILL_EXTRA_ARGS": SERVER_FLAGS,
    "DECODE_EXTRA_ARGS": SERVER_FLAGS,
    "SIM_ARGS": SERVER_FLAGS,
    "ROUTER_EXTRA_ARGS": ROUTER_FLAGS,
    "BENCH_EXTRA_ARGS": {**BENCH_FLAGS, **WORKLOAD_FLAGS},
    "CLUSTER_SRUN_ARGS": SRUN_FLAGS,
    "CLUSTER_SBATCH_ARGS": SBATCH_FLAGS,
}


# --- several keys ------------------------------------------------------------------------------

class _Listener(NamedTuple):
    host: str
    port: int
    key: str
    value: int
    what: str


def check_cross_fields(settings: Settings) -> None:
    """Raise ``ConfigError`` for settings that are each valid but do not fit together."""
    for kind in MODE_KINDS:
        check_listeners(settings, settings.topology(kind))
    for item in settings.compare_topologies:
        check_listeners(settings, parse_topology(item, settings.role_tp()))
    _check_extra_args(settings)
    _check_docker_bind(settings)
    _check_slurm_bind(settings)
    _check_slos(settings)
    check_workload_keys(settings)
    if settings.simulate:
        _check_sim_args(settings)


def _check_sim_args(s: Settings) -> None:
    """SIM_ARGS through the simulator's own parser, so a bad flag fails before anything starts."""
    from sglbench.sim.config import parse_args  # the simulator's own parser (a leaf module)

    try:
        parse_args(["--sim-profile", s.sim_profile, *shlex.split(s.sim_args)])
    except ConfigError as exc:
        raise ConfigError(f"SIM_ARGS={s.sim_args!r}: {exc}") from None


def _count_key(s: Settings, topology: Topology, role: Role) -> str:
    """What sets a role's worker count: its NUM_* key, or the topology that asks for more."""
    count = topology.workers[role]
    key = f"NUM_{role.upper()}"
    return f"{key}={count}" if s.role(role).workers == count else f"{topology.label} ({count})"


def listeners(s: Settings, topology: Topology) -> list[_Listener]:
    """Every host:port one deployment of ``topology`` (workers, router) listens on.

    Raises:
        ConfigError: a port range runs past 65535.
    """
    out: list[_Listener] = []
    for role, count in topology.workers.items():
        own = s.role(role)
        ranges = [(own.key("PORT"), own.port, f"{role} worker")]
        if role == "prefill":
            ranges.append(("BOOTSTRAP_PORT", s.bootstrap_port,
                           "the bootstrap port of prefill worker"))  # fmt: skip
        for key, port, what in ranges:
            if port + count - 1 > _MAX_PORT:
                raise ConfigError(f"{key}={port}: {_count_key(s, topology, role)} workers need "
                                  f"ports up to {port + count - 1} (> {_MAX_PORT}); lower {key}")
            out += [_Listener(same_machine(own.host), port + i, key, port, f"{what} {i}")
                    for i in range(count)]  # fmt: skip
    if topology.routed:
        router = same_machine(s.router_host)
        out.append(_Listener(router, s.router_port, "ROUTER_PORT", s.router_port, "the router"))
        if s.router_impl != "mini-lb":  # MiniLB has no metrics listener
            out.append(_Listener(router, s.router_prometheus_port, "ROUTER_PROMETHEUS_PORT",
                                 s.router_prometheus_port, "the router's metrics listener"))
    return out


def check_listeners(s: Settings, topology: Topology) -> None:
    """No two listeners of one deployment of ``topology`` on the same host:port.

    Raises:
        ConfigError: naming both listeners and the key to change.
    """
    seen: dict[tuple[str, int], _Listener] = {}
    for listener in listeners(s, topology):
        first = seen.setdefault((listener.host, listener.port), listener)
        if first is listener:
            continue
        raise ConfigError(
            f"{listener.key}={listener.value}: {listener.what} would listen on "
            f"{listener.host}:{listener.port}, already used by {first.what} ({first.key}); "
            f"choose a port outside the others' ranges"
        )


def _check_extra_args(s: Settings) -> None:
    values = s.model_dump(by_alias=True)
    for key, managed in _EXTRA_KEYS.items():
        for word in shlex.split(values[key]):
            flag = word.split("=", 1)[0]
            if not flag.startswith("--") and flag[:2] in managed:
                flag = flag[:2]  # -N2, -wnode1: a short flag with its value attached
            if flag in managed:
                raise ConfigError(
                    f"{key}: {flag} is set from {managed[flag]}; remove it from {key} "
                    "and set it there"
                )


def _check_docker_bind(s: Settings) -> None:
    """Agg in a container is reached through a port mapping: it must not listen on loopback."""
    if s.role("agg").runtime == "docker" and is_loopback(s.server_bind_host):
        raise ConfigError(f"SERVER_BIND_HOST={s.server_bind_host}: agg in a container is "
                          "reached through a port mapping, so it must listen on 0.0.0.0; unset "
                          "SERVER_BIND_HOST (or use AGG_RUNTIME=process)")


def _check_slurm_bind(s: Settings) -> None:
    """A Slurm step is reached from the harness through its node's address, never loopback."""
    roles = [r for r in ("agg", "prefill", "decode") if s.role(r).runtime == "slurm"]
    if roles and is_loopback(s.server_bind_host):
        raise ConfigError(f"SERVER_BIND_HOST={s.server_bind_host}: {roles[0]} runs as a Slurm "
                          "step on another node and is reached through that node's address; "
                          "unset SERVER_BIND_HOST (0.0.0.0)")


def _check_slos(s: Settings) -> None:
    """SLO keys that cannot work together, and a search that has no target to search for."""
    if s.bench_slo_itl_ms is not None and s.bench_slo_tpot_ms is not None:
        raise ConfigError("BENCH_SLO_ITL_MS and BENCH_SLO_TPOT_MS: the client checks both on "
                          "each request's TPOT; set only one of them")
    has_slo = any(v is not None for v in (s.bench_slo_ttft_ms, s.bench_slo_itl_ms,
                                          s.bench_slo_tpot_ms, s.bench_slo_e2e_ms))
    if has_slo and s.bench_rust_client:
        raise ConfigError("BENCH_RUST_CLIENT=true with an SLO: SGLang's Rust client ignores "
                          "--goodput (no attainment in its rows); use the Python client or drop "
                          "the BENCH_SLO_* keys")
    if s.bench_capacity_search and not has_slo:
        raise ConfigError("BENCH_CAPACITY_SEARCH=true: a capacity search needs a target; set "
                          "BENCH_SLO_TTFT_MS, BENCH_SLO_ITL_MS, BENCH_SLO_TPOT_MS or "
                          "BENCH_SLO_E2E_MS")
