"""What ``/server_info`` and ``/model_info`` answer: SGLang's shape, marked as simulated.

SGLang's ``/server_info`` is its resolved server arguments plus scheduler facts
(``max_total_num_tokens``, ``max_req_input_len``), ``internal_states`` (one per DP rank) and
``version``. Routers and the bench client read a few of these keys (``internal_states[0]``,
``disaggregation_mode``, ``tp_size``, ...); the simulator fills those from its arguments and its
engine, and adds ``"simulated": true`` and the profile so no result is mistaken for a real one.
"""

from __future__ import annotations

from typing import Any

from sglbench import __version__
from sglbench.sim.config import SimArgs
from sglbench.sim.engine import DEFAULT_CHUNKED_PREFILL_SIZE, DEFAULT_MEM_FRACTION, Engine

SGLANG_API_VERSION = "0.5.23"  # the SGLang release whose API the simulator follows


def model_info(args: SimArgs) -> dict[str, Any]:
    """``/model_info`` (SGLang's keys)."""
    return {
        "model_path": args.model_path,
        "served_model_name": args.model_name,
        "tokenizer_path": args.tokenizer_path or args.model_path,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "disaggregation_mode": args.disaggregation_mode,
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "simulated": True,
    }


def server_args(args: SimArgs) -> dict[str, Any]:
    """The server arguments as SGLang resolves them (the ones the simulator models)."""
    return {
        "model_path": args.model_path,
        "tokenizer_path": args.tokenizer_path or args.model_path,
        "served_model_name": args.model_name,
        "host": args.host,
        "port": args.port,
        "tp_size": args.tp_size,
        "dp_size": 1,
        "pp_size": 1,
        "mem_fraction_static": args.mem_fraction_static or DEFAULT_MEM_FRACTION,
        "max_running_requests": args.max_running_requests,
        "max_total_tokens": args.max_total_tokens,
        "chunked_prefill_size": args.chunked_prefill_size or DEFAULT_CHUNKED_PREFILL_SIZE,
        "schedule_policy": "fcfs",
        "stream_interval": args.stream_interval,
        "stream_output": False,
        "random_seed": args.random_seed if args.random_seed is not None else args.sim_seed,
        "skip_server_warmup": False,
        "weight_version": "default",
        "disaggregation_mode": args.disaggregation_mode,
        "disaggregation_transfer_backend": args.disaggregation_transfer_backend,
        "disaggregation_bootstrap_port": args.disaggregation_bootstrap_port,
        "disaggregation_ib_device": args.disaggregation_ib_device,
        "speculative_algorithm": None,
    }


def server_info(args: SimArgs, engine: Engine) -> dict[str, Any]:
    """``/server_info``: server args, scheduler facts, internal state, simulation marker."""
    stats = engine.stats()
    profile = engine.profile
    context = profile.model.max_context
    # SGLang reports resolved values; smg reads max_running_requests for PD admission.
    resolved = {**server_args(args), "max_running_requests": engine.max_running_requests}
    internal = {
        **resolved,
        "last_gen_throughput": stats.last_gen_throughput,
        "avg_spec_accept_length": None,  # no speculative decoding is simulated
        "effective_max_running_requests_per_dp": engine.max_running_requests,
        "memory_usage": {"token_capacity": engine.max_total_tokens},
    }
    return {
        **resolved,
        "status": "ready",
        "max_total_num_tokens": engine.max_total_tokens,
        "max_req_input_len": min(context - 5, engine.max_total_tokens),
        "context_length": context,
        "internal_states": [internal],
        "version": SGLANG_API_VERSION,
        "simulated": True,
        "sim_profile": profile.name,
        "sim": {
            "sglbench_version": __version__,
            "profile": profile.to_dict(),
            "seed": args.sim_seed,
            "time_scale": args.sim_time_scale,
            "fail_rate": args.sim_fail_rate,
        },
    }


def startup_line(args: SimArgs, engine: Engine) -> str:
    """The effective configuration, shown once at start."""
    where = f"http://{args.host}:{args.port}"
    if args.disaggregation_mode == "prefill":
        where += f" (bootstrap port {args.disaggregation_bootstrap_port})"
    return (
        f"simulated SGLang {args.disaggregation_mode!r} server on {where}: profile"
        f" {engine.profile.name}, model {args.model_name}, tp {args.tp_size},"
        f" max_total_tokens {engine.max_total_tokens},"
        f" max_running_requests {engine.max_running_requests}"
    )
