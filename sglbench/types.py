"""The vocabulary every stage shares: roles, modes, runtimes, routers, phases and states.

One home for each word, so that settings, plans, execution, results and the report compare
typed values instead of strings spelled in several places. Nothing here imports the rest of
sglbench; the simulator keeps SGLang's own words (``--disaggregation-mode null|prefill|decode``).

Mode names in files and tags: ``agg``, ``pd`` (1P1D), ``pd_<x>p<y>d`` (xPyD), built by
``mode_name`` and read back by ``parse_mode_name``; nothing else builds or parses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

# A server role, as the original scripts named them (agg = aggregated, one server does both).
Role = Literal["agg", "prefill", "decode"]
ROLES: tuple[Role, ...] = get_args(Role)
PD_ROLES: tuple[Role, ...] = ("prefill", "decode")
# What a runtime starts: a server of a role, or the router.
Service = Literal["agg", "prefill", "decode", "router"]
# What runs servers: local processes or containers on a docker engine.
RuntimeName = Literal["process", "docker"]
RUNTIMES: tuple[RuntimeName, ...] = get_args(RuntimeName)
RouterImpl = Literal["rust", "mini-lb", "smg"]
# SGLang 0.5.23's --disaggregation-transfer-backend choices (a unit test compares them).
TransferBackend = Literal["mooncake", "nixl", "ascend", "fake", "mori", "mooncake_tcp"]
# SGLang's bench client backends this project drives.
BenchBackend = Literal["sglang", "sglang-oai", "sglang-oai-chat"]
BenchDataset = Literal["random", "random-ids", "sharegpt"]

# The kind of deployment a mode starts: one aggregated server, or prefill + decode + router.
ModeKind = Literal["agg", "pd"]
MODE_KINDS: tuple[ModeKind, ...] = get_args(ModeKind)
MODE_ROLES: dict[ModeKind, tuple[Role, ...]] = {"agg": ("agg",), "pd": PD_ROLES}
# `invoke bench --mode`: detect PD from what answers, or say which it is.
BenchMode = Literal["auto", "agg", "pd"]
BENCH_MODES: tuple[BenchMode, ...] = get_args(BenchMode)

# How a point's client CPU was measured: the request phase only, the whole client call, or not
# at all (a row written just before an interrupt and adopted afterwards).
PointPhase = Literal["load", "whole", "unrecorded"]
PointStatus = Literal["ok", "failed"]
# A server or router as a runtime sees it now.
InstanceState = Literal["running", "exited"]

_XPYD = re.compile(r"^pd_(\d+)p(\d+)d$")


@dataclass(frozen=True)
class ModeShape:
    """What a mode name says: its kind and worker counts (agg: one server)."""

    kind: ModeKind
    prefill: int = 0
    decode: int = 0

    @property
    def gpus(self) -> int:
        """GPUs the mode holds, one per worker."""
        return 1 if self.kind == "agg" else self.prefill + self.decode


def mode_name(kind: ModeKind, prefill: int = 1, decode: int = 1) -> str:
    """The name of a mode in files and tags: ``agg``, ``pd`` or ``pd_<x>p<y>d``."""
    if kind == "agg":
        return "agg"
    return "pd" if (prefill, decode) == (1, 1) else f"pd_{prefill}p{decode}d"


def parse_mode_name(name: str) -> ModeShape | None:
    """The shape of a mode name built by ``mode_name``; None for any other name."""
    if name == "agg":
        return ModeShape("agg")
    if name == "pd":
        return ModeShape("pd", 1, 1)
    match = _XPYD.match(name)
    return ModeShape("pd", int(match.group(1)), int(match.group(2))) if match else None
