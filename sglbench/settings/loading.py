"""Settings from defaults < ``.env`` < the environment < the command line, validated once.

As with the original scripts' ``${VAR:-default}``, an empty value means "unset" (the default
applies), except for ``IB_DEVICE`` where empty means "no ``--disaggregation-ib-device``". Every
value remembers where it came from, for ``invoke config``. A typo or a bad value is one
``ConfigError`` line naming the key; secrets are never echoed.
"""

from __future__ import annotations

import difflib
import io
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import ValidationError

from sglbench.display import MASK, is_secret, mask_args
from sglbench.errors import ConfigError
from sglbench.settings.checks import check_cross_fields
from sglbench.settings.model import Settings

Source = Literal["default", ".env", "environment", "command line"]

# Unknown environment variables with these prefixes are treated as typos of ours; other
# environment variables (PATH, DOCKER_HOST, SGLBENCH_DEBUG, ...) belong to someone else.
_OWN_PREFIXES = ("BENCH_", "AGG_", "PREFILL_", "DECODE_", "ROUTER_", "SIM_", "CLUSTER_")
# Keys whose empty value is a value of its own rather than "unset".
_EMPTY_IS_A_VALUE = frozenset({"IB_DEVICE"})
# Read by the task machinery itself (which .env to load), not a setting.
ENV_FILE_VAR = "SGLBENCH_ENV_FILE"
# The key at the start of a .env line (after an optional "export").
_LINE_KEY = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)")

KEYS: dict[str, str] = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}


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
        return MASK
    if isinstance(value, tuple):
        return ",".join(display_value(key, v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if key.endswith("_ARGS") and isinstance(value, str):
        # --api-key VALUE and the like: the flag is shown, its value never.
        return shlex.join(mask_args(shlex.split(value)))
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
    try:
        text = env_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = env_file.read_bytes()[: exc.start].count(b"\n") + 1
        byte = exc.object[exc.start]
        raise ConfigError(f"{env_file}:{line}: not UTF-8 text (byte 0x{byte:02x}); save the "
                          "file as UTF-8") from None
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
    shown = MASK if is_secret(key) else raw
    where = sources.get(key, "default")
    msg = _FRIENDLY.get(err["type"], str(err["msg"]).removeprefix("Value error, "))
    msg = msg.replace("Input should be", "must be")
    return ConfigError(f"{key}={shown!r} ({where}): {msg}; fix it in .env or on the command line")
