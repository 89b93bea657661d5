"""The ``Settings`` model: every knob of a run, typed, bounded and described, plus per-role views.

Attribute ``x_y`` is read from key ``X_Y`` (the original scripts' names). Loading (``.env`` <
environment < command line) is ``sglbench.settings.loading``; one-value checks are the field
types' validators (``sglbench.settings.values``); checks of several keys together are
``sglbench.settings.checks``. Code that works per role asks ``settings.role(role)`` for a typed
``RoleSettings`` instead of reaching for ``<role>_...`` attributes by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from sglbench.settings.values import (
    check_docker_host,
    check_gpus,
    check_host,
    check_mounts,
    check_rate,
    check_shell_args,
    check_shm_size,
    check_sim_profile,
    check_time_limit,
    check_token,
    check_topology,
    check_unique,
    parse_rate,
    split_list,
)
from sglbench.types import (
    ROLES,
    BenchBackend,
    BenchDataset,
    ModeKind,
    Role,
    RouterImpl,
    RouterPolicy,
    RuntimeName,
    SlurmContainer,
    SlurmPlacement,
    Topology,
    TransferBackend,
)


@dataclass(frozen=True)
class Allocation:
    """The Slurm allocation the harness runs in: its job id, nodes and GPUs per node."""

    job_id: str
    nodelist: str  # as Slurm writes it: sgl-n[1-2]
    nodes: tuple[str, ...]  # scontrol show hostnames
    gpus: tuple[int, ...] = ()  # the job's GPUs on each node (0: no GPU gres), as nodes


# --mem-fraction-static of each role in the original scripts.
ORIGINAL_MEM_FRACTION: dict[Role, float] = {"agg": 0.9, "prefill": 0.8, "decode": 0.8}


Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, AfterValidator(check_host)]
DockerHost = Annotated[str, AfterValidator(check_docker_host)]
Gpus = Annotated[str, AfterValidator(check_gpus)]
ShellArgs = Annotated[str, AfterValidator(check_shell_args)]
# Sweep lists: each value once (a repeated value would measure a point twice or hide a typo).
Lengths = Annotated[
    tuple[Annotated[int, Field(ge=1, le=1_048_576)], ...], Field(min_length=1),
    AfterValidator(check_unique), BeforeValidator(split_list),
]
Concurrencies = Annotated[
    tuple[Annotated[int, Field(ge=1, le=100_000)], ...], Field(min_length=1),
    AfterValidator(check_unique), BeforeValidator(split_list),
]
Rates = Annotated[
    tuple[Annotated[float, BeforeValidator(parse_rate), Field(gt=0),
                    AfterValidator(check_rate)], ...],
    Field(min_length=1),
    AfterValidator(check_unique),
    BeforeValidator(split_list),
]
Fraction = Annotated[float, Field(gt=0, le=1)]
SloMs = Annotated[float, Field(gt=0, le=3.6e6, allow_inf_nan=False)]
# "aggx2,1p1d 2p2d@tp2": the syntax is checked by the topology parser (plan.topology).
# Slurm node names (AGG_NODES=gpu01,gpu02), each a host name.
NodeNames = Annotated[tuple[Host, ...], BeforeValidator(split_list)]
Topologies = Annotated[tuple[Annotated[str, AfterValidator(check_topology)], ...],
                       BeforeValidator(split_list)]


class Settings(BaseModel):
    """Every knob of a run. Attribute ``x_y`` is read from key ``X_Y``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # --- model and image ---------------------------------------------------------------------
    model_path: str = Field("Qwen/Qwen2.5-3B-Instruct", alias="MODEL_PATH",
                            description="HF model id or path, as sglang.launch_server --model-path")
    tokenizer_path: str = Field("", alias="TOKENIZER_PATH",
                                description="local tokenizer dir for servers and the bench client "
                                "(empty: the model's)")
    sglang_image: str = Field("lmsysorg/sglang:dev-arm64", alias="SGLANG_IMAGE",
                              description="SGLang docker image (docker runtime)")
    hf_cache_dir: str = Field("~/.cache/huggingface", alias="HF_CACHE_DIR",
                              description="host HF cache, mounted at /root/.cache/huggingface")
    hf_token: SecretStr | None = Field(None, alias="HF_TOKEN",
                                       description="HF token for gated models; never printed")

    # --- hosts and ports (the address used in URLs) --------------------------------------------
    agg_host: Host = Field("172.16.40.79", alias="AGG_HOST",
                           description="aggregated server host (cg1n1)")
    agg_port: Port = Field(30000, alias="AGG_PORT", description="aggregated server port")
    prefill_host: Host = Field("172.16.40.79", alias="PREFILL_HOST",
                               description="prefill server host (cg1n1)")
    prefill_port: Port = Field(30000, alias="PREFILL_PORT",
                               description="prefill server port (worker i uses PORT+i)")
    decode_host: Host = Field("172.16.40.80", alias="DECODE_HOST",
                              description="decode server host (cg1n2)")
    decode_port: Port = Field(30001, alias="DECODE_PORT",
                              description="decode server port (worker i uses PORT+i)")
    num_prefill: int = Field(1, ge=1, le=64, alias="NUM_PREFILL",
                             description="prefill workers (xPyD)")
    num_decode: int = Field(1, ge=1, le=64, alias="NUM_DECODE", description="decode workers (xPyD)")
    num_agg: int = Field(1, ge=1, le=64, alias="NUM_AGG",
                         description="aggregated replicas (worker i on AGG_PORT+i; >1: a router "
                         "in front)")
    agg_tp: int = Field(1, ge=1, le=64, alias="AGG_TP", description="--tp-size of agg workers")
    prefill_tp: int = Field(1, ge=1, le=64, alias="PREFILL_TP",
                            description="--tp-size of prefill workers")
    decode_tp: int = Field(1, ge=1, le=64, alias="DECODE_TP",
                           description="--tp-size of decode workers")
    bootstrap_port: Port = Field(8998, alias="BOOTSTRAP_PORT",
                                 description="--disaggregation-bootstrap-port (worker i: PORT+i)")
    server_bind_host: Host = Field("0.0.0.0", alias="SERVER_BIND_HOST",
                                   description="--host the servers listen on")

    # --- router --------------------------------------------------------------------------------
    router_host: Host = Field("127.0.0.1", alias="ROUTER_HOST",
                              description="address the bench client uses to reach the router")
    router_bind_host: Host = Field("0.0.0.0", alias="ROUTER_BIND_HOST",
                                   description="--host the router listens on")
    router_port: Port = Field(8000, alias="ROUTER_PORT", description="router port")
    router_impl: RouterImpl = Field("rust", alias="ROUTER_IMPL",
                                    description="rust (sglang-router), mini-lb (the original), smg")
    router_policy: RouterPolicy | None = Field(None, alias="ROUTER_POLICY",
                                               description="--policy of the Rust routers "
                                               "(empty: the router's default, cache_aware)")
    router_prometheus_port: Port = Field(29000, alias="ROUTER_PROMETHEUS_PORT",
                                         description="router metrics port (bound to 127.0.0.1)")

    # --- PD transfer and memory ----------------------------------------------------------------
    ib_device: str = Field("mlx5_0", alias="IB_DEVICE",
                           description="--disaggregation-ib-device (empty: let the backend pick)")
    transfer_backend: TransferBackend = Field(
        "mooncake", alias="TRANSFER_BACKEND",
        description="--disaggregation-transfer-backend (mooncake, nixl, fake, ...)")
    mem_fraction: Fraction | None = Field(None, alias="MEM_FRACTION",
                                          description="fallback --mem-fraction-static for every "
                                          "role whose own key is unset")
    agg_mem_fraction: Fraction | None = Field(None, alias="AGG_MEM_FRACTION",
                                              description="agg --mem-fraction-static (0.9)")
    prefill_mem_fraction: Fraction | None = Field(None, alias="PREFILL_MEM_FRACTION",
                                                  description="prefill --mem-fraction-static (0.8)")
    decode_mem_fraction: Fraction | None = Field(None, alias="DECODE_MEM_FRACTION",
                                                 description="decode --mem-fraction-static (0.8)")

    # --- runtime -------------------------------------------------------------------------------
    runtime: RuntimeName = Field("docker", alias="RUNTIME",
                             description="default runtime of every server role (docker, as "
                             "the original scripts; process for the simulator)")
    agg_runtime: RuntimeName | None = Field(None, alias="AGG_RUNTIME", description="agg runtime")
    prefill_runtime: RuntimeName | None = Field(None, alias="PREFILL_RUNTIME",
                                            description="prefill runtime")
    decode_runtime: RuntimeName | None = Field(None, alias="DECODE_RUNTIME",
                                           description="decode runtime")
    agg_gpus: Gpus = Field("all", alias="AGG_GPUS", description="docker GPUs of agg: all or ids")
    prefill_gpus: Gpus = Field("0", alias="PREFILL_GPUS", description="docker GPU ids of prefill")
    decode_gpus: Gpus = Field("0", alias="DECODE_GPUS", description="docker GPU ids of decode")
    docker_gpus: bool = Field(True, alias="DOCKER_GPUS",
                              description="request GPUs from docker (false for GPU-less tests)")
    docker_privileged: bool = Field(True, alias="DOCKER_PRIVILEGED",
                                    description="--privileged for prefill/decode containers "
                                    "(false where the engine cannot grant every capability)")
    shm_size: Annotated[str, AfterValidator(check_shm_size)] = Field(
        "32g", alias="SHM_SIZE", description="docker --shm-size")
    agg_docker_host: DockerHost = Field("", alias="AGG_DOCKER_HOST",
                                        description="docker endpoint of agg: empty=local, "
                                        "ssh://user@host")
    prefill_docker_host: DockerHost = Field("", alias="PREFILL_DOCKER_HOST",
                                            description="docker endpoint of prefill")
    decode_docker_host: DockerHost = Field("", alias="DECODE_DOCKER_HOST",
                                           description="docker endpoint of decode")
    server_python: str = Field("", alias="SERVER_PYTHON",
                               description="python of the process runtime (empty: this one)")
    ready_timeout_s: float = Field(900.0, gt=0, le=86_400, allow_inf_nan=False,
                                   alias="READY_TIMEOUT_S",
                                   description="deadline for a server to answer /health_generate")
    extra_server_args: ShellArgs = Field("", alias="EXTRA_SERVER_ARGS",
                                         description="extra launch_server args for every role")
    agg_extra_args: ShellArgs = Field("", alias="AGG_EXTRA_ARGS", description="extra args of agg")
    prefill_extra_args: ShellArgs = Field("", alias="PREFILL_EXTRA_ARGS",
                                          description="extra args of prefill")
    decode_extra_args: ShellArgs = Field("", alias="DECODE_EXTRA_ARGS",
                                         description="extra args of decode")
    router_extra_args: ShellArgs = Field("", alias="ROUTER_EXTRA_ARGS",
                                         description="extra args of the router")

    # --- simulator -----------------------------------------------------------------------------
    simulate: bool = Field(False, alias="SIMULATE",
                           description="run sglbench.sim instead of sglang.launch_server")
    sim_profile: Annotated[str, AfterValidator(check_sim_profile)] = Field(
        "gh200-qwen2.5-3b", alias="SIM_PROFILE", description="simulator profile (GPU + model)")
    sim_args: ShellArgs = Field("", alias="SIM_ARGS", description="extra --sim-* flags")

    # --- benchmark -----------------------------------------------------------------------------
    bench_backend: BenchBackend = Field(
        "sglang", alias="BENCH_BACKEND", description="bench_serving --backend")
    bench_dataset: BenchDataset = Field(
        "random", alias="BENCH_DATASET", description="bench_serving --dataset-name")
    bench_dataset_path: str = Field("", alias="BENCH_DATASET_PATH",
                                    description="local dataset JSON (random, sharegpt)")
    bench_num_prompts: int = Field(200, ge=1, le=1_000_000, alias="BENCH_NUM_PROMPTS",
                                   description="--num-prompts")
    bench_input_len: Lengths = Field((512,), alias="BENCH_INPUT_LEN",
                                          description="--random-input-len (list = sweep)")
    bench_output_len: Lengths = Field((128,), alias="BENCH_OUTPUT_LEN",
                                           description="--random-output-len (list = sweep)")
    bench_max_concurrency: Concurrencies = Field((200,), alias="BENCH_MAX_CONCURRENCY",
                                                description="--max-concurrency (list = sweep)")
    bench_request_rate: Rates = Field((math.inf,), alias="BENCH_REQUEST_RATE",
                                      description="--request-rate, inf = all at once (list)")
    bench_range_ratio: float = Field(0.0, ge=0, le=1, alias="BENCH_RANGE_RATIO",
                                     description="--random-range-ratio (0: lengths in [1, L])")
    bench_seed: int = Field(1, ge=0, alias="BENCH_SEED", description="--seed")
    bench_ignore_eos: bool = Field(True, alias="BENCH_IGNORE_EOS",
                                   description="ignore EOS (false: --disable-ignore-eos)")
    bench_warmup_requests: int = Field(1, ge=0, le=10_000, alias="BENCH_WARMUP_REQUESTS",
                                       description="--warmup-requests")
    bench_rust_client: bool = Field(False, alias="BENCH_RUST_CLIENT",
                                    description="SGLang's Rust load generator (--rust-client)")
    bench_extra_args: ShellArgs = Field("", alias="BENCH_EXTRA_ARGS",
                                        description="extra bench_serving args")
    bench_slo_ttft_ms: SloMs | None = Field(None, alias="BENCH_SLO_TTFT_MS",
                                            description="TTFT target, ms (--goodput ttft:MS)")
    bench_slo_itl_ms: SloMs | None = Field(None, alias="BENCH_SLO_ITL_MS",
                                           description="ITL target, ms; the client checks it "
                                           "on each request's TPOT (--goodput tpot:MS)")
    bench_slo_tpot_ms: SloMs | None = Field(None, alias="BENCH_SLO_TPOT_MS",
                                            description="TPOT target, ms (--goodput tpot:MS)")
    bench_slo_e2e_ms: SloMs | None = Field(None, alias="BENCH_SLO_E2E_MS",
                                           description="E2E latency target, ms "
                                           "(--goodput e2el:MS)")
    bench_slo_attainment: Fraction = Field(0.9, alias="BENCH_SLO_ATTAINMENT",
                                           description="share of requests that must meet "
                                           "every target")
    bench_repeats: int = Field(1, ge=1, le=20, alias="BENCH_REPEATS",
                               description="measure each point k times (same seed: the "
                               "spread is the system's noise)")
    bench_capacity_search: bool = Field(False, alias="BENCH_CAPACITY_SEARCH",
                                        description="per topology: the highest Poisson rate "
                                        "meeting the SLOs (needs an SLO)")
    bench_capacity_points: int = Field(8, ge=2, le=40, alias="BENCH_CAPACITY_POINTS",
                                       description="most points one capacity search measures")
    bench_capacity_start_rate: float = Field(1.0, gt=0, le=10000,
                                             alias="BENCH_CAPACITY_START_RATE",
                                             description="first rate tried, req/s per GPU")
    bench_capacity_tolerance: float = Field(0.05, gt=0, le=1, alias="BENCH_CAPACITY_TOLERANCE",
                                            description="stop when the bracket is this narrow "
                                            "(share of its low end)")

    # --- comparison ----------------------------------------------------------------------------
    compare_topologies: Topologies = Field(
        (), alias="COMPARE_TOPOLOGIES",
        description="topologies of invoke compare, e.g. aggx2,1p1d,1p3d,2p2d@tp2 "
        "(empty: --modes with NUM_*/ *_TP)")
    compare_gpus: int | None = Field(None, ge=1, le=1024, alias="COMPARE_GPUS",
                                     description="GPU budget: agg xN and every PD split of N")

    # --- files ---------------------------------------------------------------------------------
    results_dir: str = Field("results", alias="RESULTS_DIR", description="where results go")
    run_dir: str = Field(".sglbench", alias="RUN_DIR",
                         description="pid files and logs of what this project started")
    venv_dir: str = Field(".venv", alias="VENV_DIR", description="control-host venv")

    # --- slurm (a role on RUNTIME=slurm runs as a job step; `invoke submit` from a login node) -
    # CLUSTER_*, not SLURM_*/SBATCH_*/SRUN_*: those are Slurm's own input and output variables.
    cluster_placement: SlurmPlacement = Field(
        "split", alias="CLUSTER_PLACEMENT",
        description="split: each role on nodes of its own (prefill on the first nodes, decode on "
        "the next); pack: each worker on the first node with free GPUs")
    agg_nodes: NodeNames = Field((), alias="AGG_NODES", description="Slurm nodes of agg workers "
                                 "(empty: CLUSTER_PLACEMENT)")
    prefill_nodes: NodeNames = Field((), alias="PREFILL_NODES",
                                     description="Slurm nodes of prefill workers")
    decode_nodes: NodeNames = Field((), alias="DECODE_NODES",
                                    description="Slurm nodes of decode workers")
    cluster_gpus_per_node: int = Field(1, ge=1, le=64, alias="CLUSTER_GPUS_PER_NODE",
                                       description="GPUs per node: sbatch --gpus-per-node, and "
                                       "what placement counts when the job has no GPU gres")
    cluster_partition: Annotated[str, AfterValidator(check_token)] = Field(
        "", alias="CLUSTER_PARTITION", description="sbatch --partition (empty: the default)")
    cluster_account: Annotated[str, AfterValidator(check_token)] = Field(
        "", alias="CLUSTER_ACCOUNT", description="sbatch --account (empty: none)")
    cluster_time_limit: Annotated[str, AfterValidator(check_time_limit)] = Field(
        "01:00:00", alias="CLUSTER_TIME_LIMIT",
        description="sbatch --time: MM, HH:MM:SS, D-HH or D-HH:MM:SS")
    cluster_container: SlurmContainer = Field(
        "none", alias="CLUSTER_CONTAINER",
        description="none (SGLang on the nodes), pyxis (srun --container-image) or apptainer")
    cluster_container_image: str = Field("", alias="CLUSTER_CONTAINER_IMAGE",
                                         description="image of pyxis/apptainer steps (empty: "
                                         "SGLANG_IMAGE; apptainer gets docker://)")
    cluster_container_mounts: Annotated[str, AfterValidator(check_mounts)] = Field(
        "", alias="CLUSTER_CONTAINER_MOUNTS",
        description="extra SRC:DST mounts, comma-separated (the HF cache is always mounted)")
    cluster_srun_args: ShellArgs = Field("", alias="CLUSTER_SRUN_ARGS",
                                         description="extra srun args of every server step")
    cluster_sbatch_args: ShellArgs = Field("", alias="CLUSTER_SBATCH_ARGS",
                                           description="extra sbatch args of invoke submit")

    # --- workloads (datasets beyond random, arrivals, cache hygiene, server metrics) ----------
    bench_gsp_num_groups: int = Field(64, ge=1, le=100000, alias="BENCH_GSP_NUM_GROUPS",
                                      description="generated-shared-prefix: system prompts "
                                      "(prefix groups)")
    bench_gsp_prompts_per_group: int | None = Field(None, ge=1, le=100000,
                                                    alias="BENCH_GSP_PROMPTS_PER_GROUP",
                                                    description="generated-shared-prefix: "
                                                    "questions per group (empty: "
                                                    "BENCH_NUM_PROMPTS / groups)")
    bench_gsp_system_prompt_len: int = Field(2048, ge=1, alias="BENCH_GSP_SYSTEM_PROMPT_LEN",
                                             description="generated-shared-prefix: tokens of "
                                             "each system prompt (the shared prefix)")
    bench_gsp_question_len: int = Field(128, ge=1, alias="BENCH_GSP_QUESTION_LEN",
                                        description="generated-shared-prefix: tokens of each "
                                        "question")
    bench_gsp_output_len: int = Field(256, ge=1, alias="BENCH_GSP_OUTPUT_LEN",
                                      description="generated-shared-prefix: output tokens")
    bench_sharegpt_output_len: int | None = Field(None, ge=4, alias="BENCH_SHAREGPT_OUTPUT_LEN",
                                                  description="sharegpt: output tokens per "
                                                  "request (empty: the reference answer's)")
    bench_trace_slowdown: float = Field(1.0, gt=0, le=1000, alias="BENCH_TRACE_SLOWDOWN",
                                        description="mooncake: multiply the trace's "
                                        "inter-arrival times (2 = half the rate)")
    bench_burstiness: float = Field(1.0, gt=0, le=100, alias="BENCH_BURSTINESS",
                                    description="arrivals at a finite rate: 1 = Poisson; "
                                    "below 1 burstier (gamma inter-arrivals of this shape)")
    bench_model_context_len: int | None = Field(None, ge=16, le=10_000_000,
                                                alias="BENCH_MODEL_CONTEXT_LEN",
                                                description="context length for the up-front "
                                                "length check (empty: found from the model)")
    bench_flush_cache: bool = Field(True, alias="BENCH_FLUSH_CACHE",
                                    description="flush every worker's radix cache before each "
                                    "measured point")
    bench_server_metrics: bool = Field(True, alias="BENCH_SERVER_METRICS",
                                       description="--enable-metrics on every worker; scrape "
                                       "workers and router around each point")
    bench_metrics_interval_s: float = Field(1.0, ge=0.1, le=60, alias="BENCH_METRICS_INTERVAL_S",
                                            description="seconds between gauge samples during "
                                            "a point")

    # Not a key: the allocation the harness runs in, found from SLURM_JOB_ID by the task layer.
    allocation: Allocation | None = Field(None, exclude=True)

    def role(self, role: Role) -> RoleSettings:
        """The settings of one server role, typed (``PREFILL_HOST`` -> ``.host`` ...)."""
        if role == "agg":
            return RoleSettings("agg", self.agg_host, self.agg_port, self.num_agg,
                                self.agg_runtime or self.runtime, self.agg_gpus,
                                self.agg_docker_host, self._mem_fraction("agg",
                                                                         self.agg_mem_fraction),
                                self.agg_extra_args, self.agg_nodes)  # fmt: skip
        if role == "prefill":
            return RoleSettings("prefill", self.prefill_host, self.prefill_port,
                                self.num_prefill, self.prefill_runtime or self.runtime,
                                self.prefill_gpus, self.prefill_docker_host,
                                self._mem_fraction("prefill", self.prefill_mem_fraction),
                                self.prefill_extra_args, self.prefill_nodes)  # fmt: skip
        return RoleSettings("decode", self.decode_host, self.decode_port, self.num_decode,
                            self.decode_runtime or self.runtime, self.decode_gpus,
                            self.decode_docker_host,
                            self._mem_fraction("decode", self.decode_mem_fraction),
                            self.decode_extra_args, self.decode_nodes)  # fmt: skip

    def role_tp(self) -> dict[Role, int]:
        """AGG_TP / PREFILL_TP / DECODE_TP by role."""
        return {"agg": self.agg_tp, "prefill": self.prefill_tp, "decode": self.decode_tp}

    def topology(self, kind: ModeKind) -> Topology:
        """What ``--modes agg`` or ``pd`` deploys: NUM_AGG, or NUM_PREFILL x NUM_DECODE; *_TP."""
        if kind == "agg":
            return Topology.aggregated(self.num_agg, self.agg_tp)
        return Topology.disaggregated(self.num_prefill, self.num_decode, self.prefill_tp,
                                      self.decode_tp)  # fmt: skip

    def roles_on(self, runtime: RuntimeName) -> list[Role]:
        """The server roles whose runtime is ``runtime``."""
        return [role for role in ROLES if self.role(role).runtime == runtime]

    def _mem_fraction(self, role: Role, own: float | None) -> float:
        """A role's key, else MEM_FRACTION, else the original script's value."""
        return own or self.mem_fraction or ORIGINAL_MEM_FRACTION[role]


@dataclass(frozen=True)
class RoleSettings:
    """The settings of one server role (agg, prefill or decode), as typed fields."""

    role: Role
    host: str  # the address used in URLs
    port: int  # worker i listens on port + i
    workers: int  # NUM_AGG / NUM_PREFILL / NUM_DECODE
    runtime: RuntimeName
    gpus: str  # "all" or GPU ids
    docker_host: str  # "" = the local engine
    mem_fraction: float
    extra_args: str
    nodes: tuple[str, ...] = ()  # Slurm nodes given for the role (empty: CLUSTER_PLACEMENT)

    def key(self, suffix: str) -> str:
        """The settings key of one of this role's fields, e.g. ``key("PORT")`` -> PREFILL_PORT."""
        return f"{self.role.upper()}_{suffix}"
