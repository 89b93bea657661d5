"""One-value checks of settings: the validators of ``Settings`` field types.

Each raises ``ValueError``; pydantic turns it into the one-line error naming the key. Checks of
several keys together live in ``sglbench.settings.checks``.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from sglbench.sim.config import PROFILE_NAMES
from sglbench.types import parse_topology  # TODO(merge sim-front): sim.config


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
    """One of the simulator's shipped profiles, or a profile file (``invoke calibrate`` writes
    them)."""
    if value in PROFILE_NAMES:
        return value
    if value.endswith(".json"):
        if not Path(value).expanduser().is_file():
            raise ValueError("no such profile file; give a file `invoke calibrate` wrote")
        return value
    raise ValueError(f"unknown simulator profile; known: {', '.join(PROFILE_NAMES)}, or a "
                     ".json file")


def check_token(value: str) -> str:
    """One word without spaces or commas (a partition or account name; empty: unset)."""
    if re.search(r"[\s,]", value):
        raise ValueError("expected one name without spaces or commas")
    return value


def check_time_limit(value: str) -> str:
    """A Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    if not re.fullmatch(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}", value):
        raise ValueError("expected a Slurm time limit such as 30, 01:00:00 or 1-00:00:00")
    return value


def check_mounts(value: str) -> str:
    """Comma-separated SRC:DST[:OPTIONS] mounts with absolute paths (empty: none)."""
    for item in filter(None, value.split(",")):
        src, _, dst = item.partition(":")
        if not src.startswith("/") or not dst.startswith("/"):
            raise ValueError(f"{item!r}: expected /src:/dst with absolute paths")
    return value


def check_topology(value: str) -> str:
    """One topology as ``parse_topology`` reads it (``aggx2``, ``1p3d``, ``2p2d@tp2``)."""
    parse_topology(value)
    return value


def check_unique(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A sweep list with each value once."""
    twice = [v for n, v in enumerate(values) if v in values[:n]]
    if twice:
        shown = "inf" if isinstance(twice[0], float) and math.isinf(twice[0]) else f"{twice[0]:g}"
        raise ValueError(f"{shown} is listed twice; list each value once")
    return values


def check_rate(value: float) -> float:
    """A request rate: inf (all at once) or a finite rate a client can keep, up to 1e6/s."""
    if math.isnan(value) or (math.isfinite(value) and value > 1e6):
        raise ValueError("expected a rate up to 1e6 req/s, or inf")
    return value
