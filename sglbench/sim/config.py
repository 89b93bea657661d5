"""The simulator's configuration: ``launch_server``'s flags plus ``--sim-*``, parsed and checked.

The bottom of :mod:`sglbench.sim`: it imports only the standard library and
:mod:`sglbench.errors`, and knows the profiles only by their file names, so the harness can
validate ``SIM_ARGS`` and ``SIM_PROFILE`` with the simulator's own parser without pulling in
aiohttp, the tokenizer or the engine.

The SGLang flags keep their names and defaults, so one server spec launches SGLang or the
simulator by changing only the module. SGLang flags the simulator does not model are returned
by :func:`parse_args` to be reported in one warning line and ignored. Simulator-only flags start
with ``--sim-``; a mistyped one is an error. A bad value is a :class:`ConfigError` of one line
naming the flag.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, NoReturn

from sglbench.errors import ConfigError

Role = Literal["null", "prefill", "decode"]  # --disaggregation-mode; "null" is aggregated
ROLES: tuple[Role, ...] = ("null", "prefill", "decode")
DEFAULT_MODEL = "Qwen/Qwen2.5-3B-Instruct"
DEFAULT_PROFILE = "gh200-qwen2.5-3b"


def _shipped_profiles() -> tuple[str, ...]:
    """Names of the profiles shipped in ``sglbench/sim/profiles/`` (a new file is a new name)."""
    files = resources.files("sglbench.sim").joinpath("profiles").iterdir()
    return tuple(sorted(f.name.removesuffix(".json") for f in files if f.name.endswith(".json")))


PROFILE_NAMES: tuple[str, ...] = _shipped_profiles()


@dataclass(frozen=True)
class SimArgs:
    """The validated command line (SGLang's names; ``sim_*`` for the simulator's own)."""

    model_path: str = DEFAULT_MODEL
    tokenizer_path: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    tp_size: int = 1
    mem_fraction_static: float | None = None
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    chunked_prefill_size: int | None = None
    random_seed: int | None = None
    stream_interval: int = 1
    disaggregation_mode: Role = "null"
    disaggregation_bootstrap_port: int = 8998
    disaggregation_transfer_backend: str = "mooncake"
    disaggregation_ib_device: str | None = None
    enable_metrics: bool = False  # accepted for SGLang's command line; /metrics always answers
    sim_profile: str = DEFAULT_PROFILE
    sim_seed: int = 0
    sim_startup_delay: float = 0.0
    sim_time_scale: float = 1.0
    sim_step_overhead_ms: float | None = None
    sim_fail_rate: float = 0.0
    sim_fail_after: int | None = None
    sim_kv_transfer_delay_ms: float = 0.0
    sim_kv_transfer_fail_rate: float = 0.0
    sim_trace: Path | None = None
    sim_tokenizer_cache: Path | None = None
    sim_shared_gpu: str | None = None

    @property
    def model_name(self) -> str:
        """What ``/v1/models`` and responses call the model (SGLang: served name or path)."""
        return self.served_model_name or self.model_path


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see python -m sglbench.sim --help")


def build_parser() -> argparse.ArgumentParser:
    """The parser: SGLang's flags (same names, defaults) and the ``--sim-*`` flags."""
    p = _Parser(
        prog="python -m sglbench.sim",
        description="SGLang-compatible simulated server (no GPU): launch_server's flags + --sim-*",
        allow_abbrev=False,  # an unknown SGLang flag must never be taken for a prefix of ours
    )
    sg = p.add_argument_group("SGLang flags (same names and defaults as sglang.launch_server)")
    sg.add_argument("--model-path", "--model", default=DEFAULT_MODEL)
    sg.add_argument("--tokenizer-path", default=None)
    sg.add_argument("--served-model-name", default=None)
    sg.add_argument("--host", default="127.0.0.1")
    sg.add_argument("--port", type=int, default=30000)
    sg.add_argument("--tp-size", "--tensor-parallel-size", type=int, default=1)
    sg.add_argument("--mem-fraction-static", type=float, default=None)
    sg.add_argument("--max-running-requests", type=int, default=None)
    sg.add_argument("--max-total-tokens", type=int, default=None)
    sg.add_argument("--chunked-prefill-size", type=int, default=None)
    sg.add_argument("--random-seed", type=int, default=None)
    sg.add_argument("--stream-interval", type=int, default=1)
    sg.add_argument("--disaggregation-mode", choices=ROLES, default="null")
    sg.add_argument("--disaggregation-bootstrap-port", type=int, default=8998)
    sg.add_argument("--disaggregation-transfer-backend", default="mooncake")
    sg.add_argument("--disaggregation-ib-device", default=None)
    sg.add_argument("--enable-metrics", action="store_true")  # /metrics always answers here
    sim = p.add_argument_group("simulator flags")
    sim.add_argument(
        "--sim-profile",
        default=DEFAULT_PROFILE,
        help=f"GPU + model profile: {', '.join(PROFILE_NAMES)}",
    )
    sim.add_argument("--sim-seed", type=int, default=0, help="seed of jitter and output tokens")
    sim.add_argument(
        "--sim-startup-delay",
        type=float,
        default=0.0,
        help="seconds /health_generate answers 503 after the port opens",
    )
    sim.add_argument(
        "--sim-time-scale",
        type=float,
        default=1.0,
        help="multiply every modelled duration (2 = twice as slow)",
    )
    sim.add_argument(
        "--sim-step-overhead-ms",
        type=float,
        default=None,
        help="override the profile's fixed decode-step cost",
    )
    sim.add_argument(
        "--sim-fail-rate",
        type=float,
        default=0.0,
        help="fraction of /generate requests answered with HTTP 500",
    )
    sim.add_argument(
        "--sim-fail-after",
        type=int,
        default=None,
        help="exit (status 1) after answering N generate requests",
    )
    sim.add_argument(
        "--sim-kv-transfer-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="PD prefill: add MS milliseconds (not time-scaled) to every KV transfer",
    )
    sim.add_argument(
        "--sim-kv-transfer-fail-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="PD prefill: fail this fraction of KV transfers as SGLang reports them (seeded)",
    )
    sim.add_argument(
        "--sim-trace",
        type=Path,
        default=None,
        help="append one JSON line per request: arrival, token deadlines, sends",
    )
    sim.add_argument(
        "--sim-tokenizer-cache",
        type=Path,
        default=None,
        help="where the offline Qwen2.5 tokenizer is cached",
    )
    sim.add_argument(
        "--sim-shared-gpu",
        default=None,
        metavar="GROUP",
        help="share one modelled GPU with the other servers of GROUP on this host (pd_intra)",
    )
    return p


def parse_args(argv: Sequence[str]) -> tuple[SimArgs, list[str]]:
    """Parse and validate the command line.

    Returns:
        The arguments and the ignored (unknown SGLang) flags with their values.

    Raises:
        ConfigError: a bad value, or an unknown ``--sim-*`` flag.
    """
    ns, unknown = build_parser().parse_known_args(list(argv))
    mistyped = [a.split("=", 1)[0] for a in unknown if a.startswith("--sim-")]
    if mistyped:
        raise ConfigError(
            f"unknown simulator flag {mistyped[0]}; see python -m sglbench.sim --help"
        )
    args = SimArgs(**{k: v for k, v in vars(ns).items()})
    _validate(args)
    return args, unknown


def _check(ok: bool, flag: str, value: object, want: str) -> None:
    if not ok:
        raise ConfigError(f"{flag} {value!r} is invalid: it must be {want}")


def _validate(a: SimArgs) -> None:
    """Range checks that name the flag (cross-flag checks last)."""
    for flag, port in (
        ("--port", a.port),
        ("--disaggregation-bootstrap-port", a.disaggregation_bootstrap_port),
    ):
        _check(1 <= port <= 65535, flag, port, "a TCP port in 1..65535")
    _check(a.tp_size >= 1, "--tp-size", a.tp_size, ">= 1")
    _check(a.stream_interval >= 1, "--stream-interval", a.stream_interval, ">= 1")
    frac = a.mem_fraction_static
    _check(frac is None or 0 < frac <= 1, "--mem-fraction-static", frac, "in (0, 1]")
    runs = a.max_running_requests
    _check(runs is None or runs >= 1, "--max-running-requests", runs, ">= 1")
    total = a.max_total_tokens
    _check(total is None or total >= 1, "--max-total-tokens", total, ">= 1")
    chunk = a.chunked_prefill_size
    _check(
        chunk is None or chunk == -1 or chunk >= 1,
        "--chunked-prefill-size",
        chunk,
        ">= 1, or -1 to disable chunking",
    )
    _check(a.sim_startup_delay >= 0, "--sim-startup-delay", a.sim_startup_delay, ">= 0 seconds")
    _check(a.sim_time_scale > 0, "--sim-time-scale", a.sim_time_scale, "> 0")
    over = a.sim_step_overhead_ms
    _check(over is None or over >= 0, "--sim-step-overhead-ms", over, ">= 0")
    _check(0 <= a.sim_fail_rate <= 1, "--sim-fail-rate", a.sim_fail_rate, "in [0, 1]")
    delay = a.sim_kv_transfer_delay_ms
    _check(delay >= 0, "--sim-kv-transfer-delay-ms", delay, ">= 0 milliseconds")
    rate = a.sim_kv_transfer_fail_rate
    _check(0 <= rate <= 1, "--sim-kv-transfer-fail-rate", rate, "in [0, 1]")
    after = a.sim_fail_after
    _check(after is None or after >= 1, "--sim-fail-after", after, ">= 1")
    if a.disaggregation_mode == "prefill" and a.port == a.disaggregation_bootstrap_port:
        raise ConfigError(
            f"--disaggregation-bootstrap-port {a.port} equals --port: a prefill server needs"
            " two ports; pick another bootstrap port"
        )
    check_profile(a.sim_profile)


def is_profile_path(ref: str) -> bool:
    """True when ``ref`` names a file (a path or a ``.json`` name) rather than a shipped profile."""
    return ref.endswith(".json") or "/" in ref or "\\" in ref


def check_profile(name: str) -> str:
    """``name`` if it is a shipped profile or a profile file; else ConfigError listing them."""
    if name in PROFILE_NAMES:
        return name
    if is_profile_path(name):
        if not Path(name).expanduser().is_file():
            raise ConfigError(f"--sim-profile {name!r}: no such profile file")
        return name
    raise ConfigError(f"--sim-profile {name!r} is unknown; known: {', '.join(PROFILE_NAMES)}, "
                      "or a profile .json file")


# The offline tokenizer (sglbench.sim.tokenizer builds it): where it lives and when it is complete,
# here so that the harness can find it without importing the simulator.
DEFAULT_TOKENIZER_DIR = Path("~/.cache/sglbench/qwen2.5-tokenizer")
TOKENIZER_FORMAT = "sglbench-qwen2.5-tokenizer/1"
TOKENIZER_MARKER = "sglbench-tokenizer.json"


def tokenizer_ready(directory: Path) -> bool:
    """True when ``directory`` holds a complete offline tokenizer of the current format."""
    try:
        marker = json.loads((directory / TOKENIZER_MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == TOKENIZER_FORMAT
