"""Public data types of the simulator's engine (re-exported by :mod:`sglbench.sim.engine`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sglbench.errors import ConfigError
from sglbench.sim import timing
from sglbench.sim.config import Role as Role  # defined in config; re-exported for the engine
from sglbench.sim.profiles import Profile
from sglbench.sim.resources import SharedGpu, StreamPath
from sglbench.sim.telemetry import Telemetry

DEFAULT_MEM_FRACTION = 0.9  # --mem-fraction-static when not given (the reference runs used it)


@dataclass(frozen=True)
class EngineConfig:
    """Server arguments the engine obeys (SGLang's flag names, ``sim_`` ones for the model)."""

    role: Role
    profile: Profile
    tp_size: int = 1
    mem_fraction_static: float | None = None
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    chunked_prefill_size: int | None = None
    seed: int = 0
    time_scale: float = 1.0
    step_overhead_ms: float | None = None
    max_prefill_tokens: int = 16384
    schedule_conservativeness: float = 1.0
    enable_mixed_chunk: bool = False
    cuda_graph_max_bs: int | None = None
    disable_cuda_graph: bool = False
    disable_overlap_schedule: bool = False
    gpu: SharedGpu | None = None  # another engine's GPU to share (two servers on one GPU)
    router: StreamPath | None = None  # the router its streams pass (shared by its servers)
    telemetry: Telemetry | None = None  # where /metrics' scheduler-side series are counted


@dataclass(slots=True)
class ReqTimes:
    """What the engine noted about a request (loop times; None until it happened)."""

    recv_at: float = 0.0  # the scheduler has it (after the tokenizer's hand-over)
    forward_at: float | None = None  # its first forward (decode: its first batch)
    chunk_at: float | None = None  # end of its last prefill chunk so far
    cached_tokens: int = 0  # prompt tokens served by the prefix cache
    kv_landed_at: float | None = None  # PD decode: the KV arrived (set by the caller)


@dataclass
class GenRequest:
    """One generation request as the engine sees it (tokens only, no text)."""

    rid: str
    prompt_len: int
    max_new_tokens: int
    kv_ready: bool = False
    ignore_eos: bool = True  # the bench client's default: admission reserves the whole output
    prompt_ids: list[int] | None = None  # the prompt's tokens, for the prefix cache (optional)
    times: ReqTimes = field(default_factory=ReqTimes)


@dataclass(slots=True)
class TokenEvent:
    """One output token: its index and the loop time at which the model says it exists.

    Slotted and not frozen: the engine makes one per streamed token, so it must be cheap.
    """

    index: int
    deadline: float
    finished: bool


@dataclass(frozen=True)
class EngineStats:
    """Counters for ``/metrics`` and ``/server_info``."""

    running: int
    queued: int
    prompt_tokens_total: int
    generation_tokens_total: int
    requests_total: int
    last_gen_throughput: float
    kv_tokens_used: int
    max_total_tokens: int
    kv_evictable_tokens: int = 0  # cached prefixes no running request uses


class EngineStopped(RuntimeError):
    """Raised by a token stream whose engine was stopped before the request finished."""


def check_request(req: GenRequest, profile: Profile, role: Role, max_total: int) -> int:
    """Check a request and return the KV tokens it needs at most.

    Raises:
        ValueError: negative ``max_new_tokens``, empty prompt, or a request larger than the
            context length or the KV capacity.
    """
    if req.max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {req.max_new_tokens}")
    if req.prompt_len < 1:
        raise ValueError("the prompt is empty: send at least one token")
    context = profile.model.max_context
    if req.prompt_len + req.max_new_tokens > context:
        raise ValueError(
            f"Requested token count exceeds the model's maximum context length of {context}"
            f" tokens: {req.prompt_len} prompt + {req.max_new_tokens} new tokens"
        )
    # A prefill server keeps only the prompt's KV; other roles need the whole output.
    reserved = req.prompt_len + (1 if role == "prefill" else req.max_new_tokens)
    if reserved > max_total:
        raise ValueError(
            f"the request needs {reserved} KV tokens but the KV cache holds"
            f" {max_total} (max_total_tokens); shorten the prompt or max_new_tokens"
        )
    return reserved


def resolve_kv_capacity(config: EngineConfig, profile: Profile) -> int:
    """KV capacity in tokens from ``--max-total-tokens`` or memory, as SGLang computes it.

    Raises:
        ConfigError: a flag is out of range or leaves no memory for the KV cache.
    """
    if config.tp_size < 1:
        raise ConfigError(f"--tp-size must be >= 1, got {config.tp_size}")
    if config.max_running_requests is not None and config.max_running_requests < 1:
        raise ConfigError(f"--max-running-requests must be >= 1, got {config.max_running_requests}")
    fraction = config.mem_fraction_static or DEFAULT_MEM_FRACTION
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"--mem-fraction-static must be in (0, 1], got {fraction}")
    capacity = timing.kv_capacity_tokens(profile, config.tp_size, fraction)
    if capacity <= 0:
        raise ConfigError(
            f"--mem-fraction-static {fraction} leaves no memory for the KV cache on"
            f" {profile.gpu.name}; raise it"
        )
    if config.max_total_tokens is not None:
        if config.max_total_tokens < 1:
            raise ConfigError(f"--max-total-tokens must be >= 1, got {config.max_total_tokens}")
        # SGLang takes the smaller of the flag and what memory allows.
        capacity = min(capacity, config.max_total_tokens)
    return capacity
