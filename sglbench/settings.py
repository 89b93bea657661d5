"""One typed ``Settings`` object, read from ``.env`` then the environment, validated once.

Keys keep the original scripts' names (``PREFILL_HOST``, ``BENCH_NUM_PROMPTS``, ...). Precedence,
lowest first: built-in defaults (the original setup), ``.env``, the environment (as the original
``${VAR:-default}`` did), command-line overrides. As with ``${VAR:-default}``, an empty value
means "unset" (the default applies), except for ``IB_DEVICE`` where empty means "no
``--disaggregation-ib-device``". Every value remembers where it came from, for ``invoke config``.
A typo or a bad value is one ``ConfigError`` line naming the key (the value checks and those
that involve several keys live in ``sglbench.settings_checks``).
"""

from __future__ import annotations

import difflib
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)

from sglbench.errors import ConfigError
from sglbench.settings_checks import (
    check_cross_fields,
    check_docker_host,
    check_gpus,
    check_host,
    check_shell_args,
    check_shm_size,
    check_sim_profile,
    parse_rate,
    split_list,
)

Role = Literal["agg", "prefill", "decode"]
ROLES: tuple[Role, ...] = get_args(Role)
Runtime = Literal["process", "docker"]
RouterImpl = Literal["rust", "mini-lb", "smg"]
# SGLang 0.5.23's --disaggregation-transfer-backend choices (a unit test compares them).
TransferBackend = Literal["mooncake", "nixl", "ascend", "fake", "mori", "mooncake_tcp"]
Source = Literal["default", ".env", "environment", "command line"]

# Unknown environment variables with these prefixes are treated as typos of ours; other
# environment variables (PATH, DOCKER_HOST, SGLBENCH_DEBUG, ...) belong to someone else.
_OWN_PREFIXES = ("BENCH_", "AGG_", "PREFILL_", "DECODE_", "ROUTER_", "SIM_")
_SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD")
# Keys whose empty value is a value of its own rather than "unset".
_EMPTY_IS_A_VALUE = frozenset({"IB_DEVICE"})
# Read by tasks.py itself (which .env to load), not a setting.
ENV_FILE_VAR = "SGLBENCH_ENV_FILE"
# The key at the start of a .env line (after an optional "export").
_LINE_KEY = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)")


Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, AfterValidator(check_host)]
DockerHost = Annotated[str, AfterValidator(check_docker_host)]
Gpus = Annotated[str, AfterValidator(check_gpus)]
ShellArgs = Annotated[str, AfterValidator(check_shell_args)]
PositiveInts = Annotated[
    tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1), BeforeValidator(split_list)
]
Rates = Annotated[
    tuple[Annotated[float, BeforeValidator(parse_rate), Field(gt=0)], ...],
    Field(min_length=1),
    BeforeValidator(split_list),
]
Fraction = Annotated[float, Field(gt=0, le=1)]


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
    runtime: Runtime = Field("docker", alias="RUNTIME",
                             description="default runtime of every server role (docker, as "
                             "the original scripts; process for the simulator)")
    agg_runtime: Runtime | None = Field(None, alias="AGG_RUNTIME", description="agg runtime")
    prefill_runtime: Runtime | None = Field(None, alias="PREFILL_RUNTIME",
                                            description="prefill runtime")
    decode_runtime: Runtime | None = Field(None, alias="DECODE_RUNTIME",
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
    ready_timeout_s: float = Field(900.0, gt=0, alias="READY_TIMEOUT_S",
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
    bench_backend: Literal["sglang", "sglang-oai", "sglang-oai-chat"] = Field(
        "sglang", alias="BENCH_BACKEND", description="bench_serving --backend")
    bench_dataset: Literal["random", "random-ids", "sharegpt"] = Field(
        "random", alias="BENCH_DATASET", description="bench_serving --dataset-name")
    bench_dataset_path: str = Field("", alias="BENCH_DATASET_PATH",
                                    description="local dataset JSON (random, sharegpt)")
    bench_num_prompts: int = Field(200, ge=1, alias="BENCH_NUM_PROMPTS",
                                   description="--num-prompts")
    bench_input_len: PositiveInts = Field((512,), alias="BENCH_INPUT_LEN",
                                          description="--random-input-len (list = sweep)")
    bench_output_len: PositiveInts = Field((128,), alias="BENCH_OUTPUT_LEN",
                                           description="--random-output-len (list = sweep)")
    bench_max_concurrency: PositiveInts = Field((200,), alias="BENCH_MAX_CONCURRENCY",
                                                description="--max-concurrency (list = sweep)")
    bench_request_rate: Rates = Field((math.inf,), alias="BENCH_REQUEST_RATE",
                                      description="--request-rate, inf = all at once (list)")
    bench_range_ratio: float = Field(0.0, ge=0, le=1, alias="BENCH_RANGE_RATIO",
                                     description="--random-range-ratio (0: lengths in [1, L])")
    bench_seed: int = Field(1, ge=0, alias="BENCH_SEED", description="--seed")
    bench_ignore_eos: bool = Field(True, alias="BENCH_IGNORE_EOS",
                                   description="ignore EOS (false: --disable-ignore-eos)")
    bench_warmup_requests: int = Field(1, ge=0, alias="BENCH_WARMUP_REQUESTS",
                                       description="--warmup-requests")
    bench_rust_client: bool = Field(False, alias="BENCH_RUST_CLIENT",
                                    description="SGLang's Rust load generator (--rust-client)")
    bench_extra_args: ShellArgs = Field("", alias="BENCH_EXTRA_ARGS",
                                        description="extra bench_serving args")
    bench_slo_ttft_ms: float | None = Field(None, gt=0, alias="BENCH_SLO_TTFT_MS",
                                            description="TTFT SLO for goodput in the report")
    bench_slo_itl_ms: float | None = Field(None, gt=0, alias="BENCH_SLO_ITL_MS",
                                           description="ITL SLO for goodput in the report")

    # --- files ---------------------------------------------------------------------------------
    results_dir: str = Field("results", alias="RESULTS_DIR", description="where results go")
    run_dir: str = Field(".sglbench", alias="RUN_DIR",
                         description="pid files and logs of what this project started")
    venv_dir: str = Field(".venv", alias="VENV_DIR", description="control-host venv")

    def role_runtime(self, role: Role) -> Runtime:
        """The runtime of one server role (its own key, else ``RUNTIME``)."""
        own: Runtime | None = getattr(self, f"{role}_runtime")
        return own or self.runtime

    def role_mem_fraction(self, role: Role) -> float:
        """``--mem-fraction-static`` of a role: its key, else MEM_FRACTION, else the original."""
        own: float | None = getattr(self, f"{role}_mem_fraction")
        original = {"agg": 0.9, "prefill": 0.8, "decode": 0.8}[role]
        return own or self.mem_fraction or original


KEYS: dict[str, str] = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}


def is_secret(key: str) -> bool:
    """True for keys whose value must never be shown or written (HF_TOKEN, ...)."""
    return any(marker in key for marker in _SECRET_MARKERS)


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where each key's value came from."""

    settings: Settings
    sources: Mapping[str, Source]

    def rows(self) -> list[tuple[str, str, Source]]:
        """(key, printable value, source) for every key; secrets masked."""
        dumped = self.settings.model_dump(by_alias=True)
        return [(k, display_value(k, dumped[k]), self.sources.get(k, "default")) for k in KEYS]


def display_value(key: str, value: Any) -> str:
    """The value as a user writes it in ``.env``; secrets masked."""
    if value is None or value == "":
        return ""
    if is_secret(key):
        return "********"
    if isinstance(value, tuple):
        return ",".join(display_value(key, v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def public_settings(settings: Settings) -> dict[str, str]:
    """KEY -> value with secrets removed, for metadata and logs."""
    dumped = settings.model_dump(by_alias=True)
    return {k: display_value(k, dumped[k]) for k in KEYS if not is_secret(k)}


def _unknown_key_error(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key.upper(), list(KEYS), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else "see .env.example for the known keys"
    return ConfigError(f"{where}: unknown key {key}; {hint}")


def _read_env_file(env_file: Path) -> dict[str, str]:
    """KEY -> value of a ``.env``; a line python-dotenv cannot parse is an error, not skipped."""
    text = env_file.read_text(encoding="utf-8")
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # Never echo the line: its value may be a token (HF_TOKEN="hf_... with no closing
            # quote). The key, when the line starts with one, is enough to find it.
            key = _LINE_KEY.match(binding.original.string)
            what = f"the line of {key.group(1)}" if key else "this line"
            raise ConfigError(
                f"{env_file}:{binding.original.line}: cannot parse {what}; "
                "write KEY=VALUE (quote values with spaces, close every quote)"
            )
    # dotenv_values also expands ${VAR} references, as a shell would.
    values = dotenv_values(stream=io.StringIO(text))
    return {key: value or "" for key, value in values.items()}


def _known(layer: dict[str, str], where: str) -> dict[str, str]:
    """The layer itself, once every key in it is known (else the typo error)."""
    for key in layer:
        if key not in KEYS:
            raise _unknown_key_error(key, where)
    return layer


def load_settings(
    env_file: Path | None = Path(".env"),
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Read defaults < ``env_file`` < ``environ`` < ``overrides`` and validate once.

    Args:
        env_file: the ``.env`` to read; a missing file is fine (defaults apply).
        environ: the process environment; only our keys are read from it.
        overrides: KEY -> value from the command line.

    Raises:
        ConfigError: one line naming the key, the value and what is allowed.
    """
    layers: list[tuple[Source, dict[str, str]]] = []
    if env_file is not None and env_file.is_file():
        layers.append((".env", _known(_read_env_file(env_file), str(env_file))))
    own = {k: v for k, v in (environ or {}).items() if k in KEYS or k.startswith(_OWN_PREFIXES)}
    layers += [("environment", _known(own, "environment")),
               ("command line", _known(dict(overrides or {}), "command line"))]
    values: dict[str, str] = {}
    sources: dict[str, Source] = {}
    for source, layer in layers:
        for key, value in layer.items():
            # As ${VAR:-default} in the original scripts: an empty value is no value.
            if value.strip() or key in _EMPTY_IS_A_VALUE:
                values[key], sources[key] = value, source
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise _validation_error(exc, values, sources) from None
    check_cross_fields(settings)
    return LoadedSettings(settings, sources)


# pydantic's wording for parse errors, in the words of a .env file.
_FRIENDLY = {
    "bool_parsing": "expected true or false",
    "int_parsing": "expected a whole number",
    "float_parsing": "expected a number (or inf where a rate is asked)",
}


def _validation_error(
    exc: ValidationError, values: Mapping[str, str], sources: Mapping[str, Source]
) -> ConfigError:
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "?"
    raw = values.get(key, "")
    shown = "********" if is_secret(key) else raw
    where = sources.get(key, "default")
    msg = _FRIENDLY.get(err["type"], str(err["msg"]).removeprefix("Value error, "))
    msg = msg.replace("Input should be", "must be")
    return ConfigError(f"{key}={shown!r} ({where}): {msg}; fix it in .env or on the command line")
