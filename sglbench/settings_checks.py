"""Checks of settings values: one value (pydantic validators) and several keys together.

Kept apart from ``sglbench.settings`` so that the field list stays readable. A one-value check
raises ``ValueError`` (pydantic turns it into the one-line error naming the key). The checks of
several keys raise ``ConfigError`` naming the keys to change, and are of three kinds:
listeners of one PD deployment that would share a host:port (including the xPyD port ranges,
bootstrap ports and the router's metrics port); extra-args keys that repeat a flag a dedicated
key already sets (argparse keeps the last one, so the harness would wait on one port while the
server listens on another); and SIM_ARGS, checked by the simulator's own parser.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import TYPE_CHECKING, Any, NamedTuple

from sglbench.errors import ConfigError
from sglbench.sim.config import PROFILE_NAMES

if TYPE_CHECKING:
    from sglbench.settings import Settings

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_MAX_PORT = 65535

# Flags the builders set from a dedicated key: an extra-args key must not repeat them.
SERVER_FLAGS: dict[str, str] = {
    "--model-path": "MODEL_PATH",
    "--tokenizer-path": "TOKENIZER_PATH",
    "--host": "SERVER_BIND_HOST",
    "--port": "AGG_PORT/PREFILL_PORT/DECODE_PORT",
    "--mem-fraction-static": "AGG_/PREFILL_/DECODE_MEM_FRACTION",
    "--disaggregation-mode": "the task (prefill or decode)",
    "--disaggregation-ib-device": "IB_DEVICE",
    "--disaggregation-transfer-backend": "TRANSFER_BACKEND",
    "--disaggregation-bootstrap-port": "BOOTSTRAP_PORT",
    "--sim-profile": "SIM_PROFILE",
}
ROUTER_FLAGS: dict[str, str] = {
    "--pd-disaggregation": "the pd-router task",
    "--prefill": "PREFILL_HOST/PREFILL_PORT/NUM_PREFILL",
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
    "--base-url": "the bench task (agg or router URL)",
    "--output-file": "RESULTS_DIR and --tag",
    "--tag": "the bench task's --tag",
    "--pd-separated": "the bench task (detected from the router)",
}
_EXTRA_KEYS: dict[str, dict[str, str]] = {
    "EXTRA_SERVER_ARGS": SERVER_FLAGS,
    "AGG_EXTRA_ARGS": SERVER_FLAGS,
    "PREFILL_EXTRA_ARGS": SERVER_FLAGS,
    "DECODE_EXTRA_ARGS": SERVER_FLAGS,
    "SIM_ARGS": SERVER_FLAGS,
    "ROUTER_EXTRA_ARGS": ROUTER_FLAGS,
    "BENCH_EXTRA_ARGS": BENCH_FLAGS,
}


# --- one value (pydantic validators of Settings fields) ---------------------------------------

def split_list(value: Any) -> Any:
    """Accept ``"8,32 64"`` (a sweep) as well as a single value or a real sequence."""
    if isinstance(value, str):
        parts = [p for p in value.replace(",", " ").split() if p]
        return parts if parts else value
    if isinstance(value, int | float):
        return [value]
    return value


def parse_rate(value: Any) -> Any:
    """``inf``/``Infinity`` (any case) as ``math.inf``; anything else unchanged."""
    if isinstance(value, str) and value.strip().lower() in {"inf", "infinity"}:
        return math.inf
    return value


def check_host(value: str) -> str:
    """A host name or IPv4 address: no scheme, port or path."""
    # A URL or host:port here would silently become http://http://... or :port:port in URLs.
    if not value or re.search(r"[\s/:]", value):
        raise ValueError("expected a host name or IPv4 address without scheme or port")
    return value


def check_docker_host(value: str) -> str:
    """Empty (the local engine) or a docker endpoint URL (ssh://, tcp://, unix://)."""
    if value and not re.fullmatch(r"(unix|tcp|ssh|npipe)://\S+", value):
        raise ValueError("expected empty (local engine), ssh://user@host or tcp://host:port")
    return value


def check_gpus(value: str) -> str:
    """``all`` or comma-separated GPU ids."""
    if value != "all" and not re.fullmatch(r"\d+(,\d+)*", value):
        raise ValueError("expected all, or GPU ids such as 0 or 0,1")
    return value


def check_shm_size(value: str) -> str:
    """A docker size: digits with an optional b/k/m/g unit."""
    if not re.fullmatch(r"\d+[bkmgBKMG]?", value):
        raise ValueError("expected a size such as 32g, 512m or 1073741824")
    return value


def check_shell_args(value: str) -> str:
    """Words a shell could split (balanced quotes)."""
    try:
        shlex.split(value)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(f"not valid shell words ({exc})") from None
    return value


def check_sim_profile(value: str) -> str:
    """One of the simulator's shipped profiles."""
    if value not in PROFILE_NAMES:
        raise ValueError(f"unknown simulator profile; known: {', '.join(PROFILE_NAMES)}")
    return value


# --- several keys ------------------------------------------------------------------------------

class _Listener(NamedTuple):
    host: str
    port: int
    key: str
    what: str


def check_cross_fields(settings: Settings) -> None:
    """Raise ``ConfigError`` for settings that are each valid but do not fit together."""
    _check_port_ranges(settings)
    _check_listeners(settings)
    _check_extra_args(settings)
    if settings.simulate:
        _check_sim_args(settings)


def _check_sim_args(s: Settings) -> None:
    """SIM_ARGS through the simulator's own parser, so a bad flag fails before anything starts."""
    from sglbench.sim.config import parse_args  # the simulator's parser, only when simulating

    try:
        parse_args(["--sim-profile", s.sim_profile, *shlex.split(s.sim_args)])
    except ConfigError as exc:
        raise ConfigError(f"SIM_ARGS={s.sim_args!r}: {exc}") from None


def _same_machine(host: str) -> str:
    return "127.0.0.1" if host in _LOOPBACK or host.startswith("127.") else host


def _check_port_ranges(s: Settings) -> None:
    ranges = (
        ("PREFILL_PORT", s.prefill_port, "NUM_PREFILL", s.num_prefill),
        ("DECODE_PORT", s.decode_port, "NUM_DECODE", s.num_decode),
        ("BOOTSTRAP_PORT", s.bootstrap_port, "NUM_PREFILL", s.num_prefill),
    )
    for key, port, count_key, count in ranges:
        if port + count - 1 > _MAX_PORT:
            raise ConfigError(
                f"{key}={port}: {count_key}={count} workers need ports up to {port + count - 1} "
                f"(> {_MAX_PORT}); lower {key}"
            )


def _pd_listeners(s: Settings) -> list[_Listener]:
    """Every host:port one PD deployment (prefill, decode, router) listens on."""
    prefill, decode, router = (_same_machine(h) for h in (s.prefill_host, s.decode_host,
                                                             s.router_host))
    out = [_Listener(prefill, s.prefill_port + i, "PREFILL_PORT", f"prefill worker {i}")
           for i in range(s.num_prefill)]
    out += [_Listener(decode, s.decode_port + i, "DECODE_PORT", f"decode worker {i}")
            for i in range(s.num_decode)]
    out += [_Listener(prefill, s.bootstrap_port + i, "BOOTSTRAP_PORT",
                      f"the bootstrap port of prefill worker {i}") for i in range(s.num_prefill)]
    out.append(_Listener(router, s.router_port, "ROUTER_PORT", "the router"))
    if s.router_impl != "mini-lb":  # MiniLB has no metrics listener
        out.append(_Listener(router, s.router_prometheus_port, "ROUTER_PROMETHEUS_PORT",
                             "the router's metrics listener"))
    return out


def _check_listeners(s: Settings) -> None:
    seen: dict[tuple[str, int], _Listener] = {}
    for listener in _pd_listeners(s):
        first = seen.setdefault((listener.host, listener.port), listener)
        if first is listener:
            continue
        value = getattr(s, listener.key.lower())
        raise ConfigError(
            f"{listener.key}={value}: {listener.what} would listen on "
            f"{listener.host}:{listener.port}, already used by {first.what} ({first.key}); "
            f"choose a port outside the others' ranges"
        )


def _check_extra_args(s: Settings) -> None:
    for key, managed in _EXTRA_KEYS.items():
        for word in shlex.split(getattr(s, key.lower())):
            flag = word.split("=", 1)[0]
            if flag in managed:
                raise ConfigError(
                    f"{key}: {flag} is set from {managed[flag]}; remove it from {key} "
                    "and set it there"
                )
