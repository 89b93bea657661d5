"""The vocabulary every stage shares: roles, modes, runtimes, routers, phases and states.

One home for each word, so that settings, plans, execution, results and the report compare
typed values instead of strings spelled in several places. Nothing here imports the rest of
sglbench; the simulator keeps SGLang's own words (``--disaggregation-mode null|prefill|decode``).

Mode names in files and tags (``agg``, ``agg_x2``, ``pd``, ``pd_1p3d``, ``pd_2p2d_tp2``) are built
by ``Topology.name`` and read back by ``parse_mode_name``; nothing else builds or parses them.
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
# What runs servers: local processes, containers on a docker engine, or Slurm job steps.
RuntimeName = Literal["process", "docker", "slurm"]
RUNTIMES: tuple[RuntimeName, ...] = get_args(RuntimeName)
# Slurm: where roles go on the allocation's nodes (split: each role on nodes of its own, in
# role order; pack: every worker on the first node with free GPUs), and what runs a step.
SlurmPlacement = Literal["split", "pack"]
SlurmContainer = Literal["none", "pyxis", "apptainer"]
RouterImpl = Literal["rust", "mini-lb", "smg"]
# --policy of the Rust routers (sglang-router 0.3.2 and smg 1.13.0 both take these).
RouterPolicy = Literal["random", "round_robin", "cache_aware", "power_of_two"]
# SGLang 0.5.23's --disaggregation-transfer-backend choices (a unit test compares them).
TransferBackend = Literal["mooncake", "nixl", "ascend", "fake", "mori", "mooncake_tcp"]
# SGLang's bench client backends this project drives.
BenchBackend = Literal["sglang", "sglang-oai", "sglang-oai-chat"]
# generated-shared-prefix and mooncake (trace replay) are the workloads of issue 11.
BenchDataset = Literal["random", "random-ids", "sharegpt", "generated-shared-prefix", "mooncake"]

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
# not_measured: the mode ended before the point (a server died); resume measures it.
PointStatus = Literal["ok", "failed", "not_measured"]
# A server or router as a runtime sees it now.
InstanceState = Literal["running", "exited"]

_NAME = re.compile(r"^(?:agg(?:_x(?P<agg>\d+))?|pd(?:_(?P<p>\d+)p(?P<d>\d+)d)?)"
                   r"(?:_tp(?P<tp>\d+)(?:-(?P<dtp>\d+))?)?$")


@dataclass(frozen=True)
class Topology:
    """What a mode deploys: agg replicas, or prefill and decode workers; TP per role.

    Its GPU count is workers x TP per role. Its ``name`` is the mode's name in files and tags:
    ``agg`` (one server), ``agg_x2``, ``pd`` (1P1D), ``pd_1p3d``, with ``_tp2`` when every role
    runs TP 2 and ``_tp2-1`` when prefill and decode differ (``pd_1p1d_tp2-1``).
    """

    kind: ModeKind
    agg: int = 0
    prefill: int = 0
    decode: int = 0
    agg_tp: int = 1
    prefill_tp: int = 1
    decode_tp: int = 1

    @classmethod
    def aggregated(cls, replicas: int = 1, tp: int = 1) -> Topology:
        """``replicas`` aggregated servers of TP ``tp``."""
        return cls("agg", agg=replicas, agg_tp=tp)

    @classmethod
    def disaggregated(cls, prefill: int = 1, decode: int = 1, prefill_tp: int = 1,
                      decode_tp: int = 1) -> Topology:
        """xPyD: ``prefill`` prefill and ``decode`` decode workers."""
        return cls("pd", prefill=prefill, decode=decode, prefill_tp=prefill_tp,
                   decode_tp=decode_tp)  # fmt: skip

    @property
    def prefill_gpus(self) -> int:
        """GPUs of the prefill workers (0 for agg)."""
        return self.prefill * self.prefill_tp

    @property
    def decode_gpus(self) -> int:
        """GPUs of the decode workers (0 for agg)."""
        return self.decode * self.decode_tp

    @property
    def gpus(self) -> int:
        """GPUs the mode holds: workers x TP per role."""
        if self.kind == "agg":
            return self.agg * self.agg_tp
        return self.prefill_gpus + self.decode_gpus

    @property
    def workers(self) -> dict[Role, int]:
        """Workers per role of this mode."""
        if self.kind == "agg":
            return {"agg": self.agg}
        return {"prefill": self.prefill, "decode": self.decode}

    def tp(self, role: Role) -> int:
        """The TP size of one role's workers."""
        return {"agg": self.agg_tp, "prefill": self.prefill_tp, "decode": self.decode_tp}[role]

    @property
    def routed(self) -> bool:
        """True when a router fronts the mode (PD always; agg with several replicas)."""
        return self.kind == "pd" or self.agg > 1

    @property
    def name(self) -> str:
        """The mode's name in files and tags (see the class docstring)."""
        if self.kind == "agg":
            base = "agg" if self.agg == 1 else f"agg_x{self.agg}"
            return base if self.agg_tp == 1 else f"{base}_tp{self.agg_tp}"
        first, second = self.prefill_tp, self.decode_tp
        if (self.prefill, self.decode, first, second) == (1, 1, 1, 1):
            return "pd"
        base = f"pd_{self.prefill}p{self.decode}d"
        if (first, second) == (1, 1):
            return base
        return f"{base}_tp{first}" if first == second else f"{base}_tp{first}-{second}"

    @property
    def label(self) -> str:
        """For people: ``agg x2``, ``1P3D``, ``2P2D TP2``."""
        if self.kind == "agg":
            core = "agg" if self.agg == 1 else f"agg x{self.agg}"
        else:
            core = f"{self.prefill}P{self.decode}D"
        tps = {self.agg_tp} if self.kind == "agg" else {self.prefill_tp, self.decode_tp}
        if tps == {1}:
            return core
        if len(tps) == 1:
            return f"{core} TP{tps.pop()}"
        return f"{core} TP{self.prefill_tp}/{self.decode_tp}"


def parse_mode_name(name: str) -> Topology | None:
    """The topology a mode name built by ``Topology.name`` stands for; None for other names."""
    match = _NAME.match(name)
    if match is None:
        return None
    tp = int(match["tp"] or 1)
    dtp = int(match["dtp"] or tp)
    if name.startswith("agg"):
        if match["dtp"]:
            return None
        return Topology.aggregated(int(match["agg"] or 1), tp)
    p, d = int(match["p"] or 1), int(match["d"] or 1)
    return Topology.disaggregated(p, d, tp, dtp)


_SYNTAX = re.compile(r"^(?:agg(?:x(?P<agg>\d+))?|(?P<p>\d+)p(?P<d>\d+)d)"
                     r"(?:@tp(?P<tp>\d+)(?:/(?P<dtp>\d+))?)?$")
TOPOLOGY_SYNTAX = "agg, aggxN, PpDd (1p3d), with @tpT or, for PD, @tpT/U (prefill/decode)"


def parse_topology(text: str, tp: dict[Role, int] | None = None) -> Topology:
    """A topology as a user writes it: ``agg``, ``aggx2``, ``1p3d``, ``2p2d@tp2``, ``1p1d@tp2/1``.

    Args:
        text: one topology (case-insensitive).
        tp: the TP of each role when the text gives none (default 1).

    Raises:
        ValueError: the text is not a topology, or a count is 0.
    """
    match = _SYNTAX.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a topology; write {TOPOLOGY_SYNTAX}")
    own = tp or {}
    given = int(match["tp"]) if match["tp"] else None
    if match["p"] is None:
        if match["dtp"]:
            raise ValueError(f"{text!r}: agg has one TP size (@tpT)")
        topo = Topology.aggregated(int(match["agg"] or 1), given or own.get("agg", 1))
    else:
        decode_tp = int(match["dtp"]) if match["dtp"] else given
        topo = Topology.disaggregated(int(match["p"]), int(match["d"]),
                                      given or own.get("prefill", 1),
                                      decode_tp or own.get("decode", 1))  # fmt: skip
    counts = [*topo.workers.values(), topo.agg_tp, topo.prefill_tp, topo.decode_tp]
    if min(counts) < 1:
        raise ValueError(f"{text!r}: every count and TP size must be at least 1")
    return topo
