"""Topologies the replay can run: aggregated replicas, xPyD, and two servers on one GPU.

A topology is plain data: the servers of each role (profile, TP, memory fraction, which GPU
group each sits on) and how the KV moves between prefill and decode. Its GPU count is what a
comparison at equal budget divides by. Names: ``agg`` / ``aggxN`` (N replicas behind a
round-robin router), ``XpYd`` (X prefill, Y decode servers, PD router), ``pd_intra`` (one
prefill and one decode server sharing one GPU, memory fraction 0.45 each, as the reference runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from sglbench.sim.profiles import Profile

Mode = Literal["agg", "pd"]
_XPYD = re.compile(r"^(\d+)p(\d+)d$")
_AGG = re.compile(r"^agg(?:x(\d+))?$")


@dataclass(frozen=True)
class ServerSpec:
    """One simulated server (the flags of ``sglang.launch_server`` that the model uses)."""

    profile: Profile
    tp: int = 1
    mem_fraction: float = 0.9
    gpu_group: str | None = None  # servers with the same group share one GPU
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    enable_mixed_chunk: bool = False


@dataclass(frozen=True)
class Topology:
    """Servers per role and the KV path between them.

    Attributes:
        name: ``agg``, ``aggx4``, ``1p3d``, ``pd_intra``...
        agg: Aggregated replicas (round robin, like the router's regular mode).
        prefill: Prefill servers (PD).
        decode: Decode servers (PD). Requests go round robin over each role.
        link_GBps: KV-path bandwidth; default the smaller of the two servers' profiles'
            ``link_bandwidth_GBps``.
        shared_link: True when every transfer shares one path (the prefill node's NIC, as
            in the reference ``pd_1p*d`` runs); else one path per prefill server.
    """

    name: str
    agg: tuple[ServerSpec, ...] = ()
    prefill: tuple[ServerSpec, ...] = ()
    decode: tuple[ServerSpec, ...] = ()
    link_GBps: float | None = None
    shared_link: bool = True
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.agg) == bool(self.prefill or self.decode):
            raise ValueError(f"topology {self.name}: either agg servers or prefill+decode")
        if not self.agg and not (self.prefill and self.decode):
            raise ValueError(f"topology {self.name}: PD needs prefill and decode servers")

    @property
    def mode(self) -> Mode:
        """``agg`` or ``pd``."""
        return "agg" if self.agg else "pd"

    @property
    def gpus(self) -> int:
        """GPUs it holds: TP per server, servers of one GPU group counted once."""
        seen: dict[str, int] = {}
        total = 0
        for s in (*self.agg, *self.prefill, *self.decode):
            if s.gpu_group is None:
                total += s.tp
            else:
                seen[s.gpu_group] = max(seen.get(s.gpu_group, 0), s.tp)
        return total + sum(seen.values())

    @property
    def prefill_gpus(self) -> int:
        """GPUs of the prefill role (0 for agg)."""
        return sum(s.tp for s in self.prefill)

    @property
    def decode_gpus(self) -> int:
        """GPUs of the decode role (0 for agg)."""
        return sum(s.tp for s in self.decode)


def build(
    name: str,
    profile: Profile,
    decode_profile: Profile | None = None,
    tp: int = 1,
    mem_fraction: float = 0.9,
) -> Topology:
    """The topology called ``name`` (``agg``, ``aggxN``, ``XpYd``, ``pd_intra``).

    Args:
        name: Topology name.
        profile: Profile of every server (of the prefill ones when ``decode_profile`` is set).
        decode_profile: Profile of the decode servers, if different (e.g. A100 decode).
        tp: TP size of every server.
        mem_fraction: ``--mem-fraction-static`` of servers that have a GPU to themselves.

    Raises:
        ValueError: unknown name.
    """
    dec = decode_profile or profile
    if name == "pd_intra":
        half = ServerSpec(profile, tp, 0.45, gpu_group="gpu0")
        return Topology(name, prefill=(half,), decode=(replace(half, profile=dec),))
    if m := _AGG.match(name):
        n = int(m.group(1) or 1)
        return Topology(name, agg=tuple(ServerSpec(profile, tp, mem_fraction) for _ in range(n)))
    if m := _XPYD.match(name):
        x, y = int(m.group(1)), int(m.group(2))
        if x < 1 or y < 1:
            raise ValueError(f"topology {name}: needs at least 1 prefill and 1 decode server")
        return Topology(
            name,
            prefill=tuple(ServerSpec(profile, tp, mem_fraction) for _ in range(x)),
            decode=tuple(ServerSpec(dec, tp, mem_fraction) for _ in range(y)),
            shared_link=False,
        )
    raise ValueError(f"unknown topology {name!r}: use agg, aggxN, XpYd (e.g. 1p3d) or pd_intra")


def splits(gpus: int, tp: int = 1) -> list[str]:
    """Names of agg x(N/tp) and every xPyD with (x + y) * tp == N, x, y >= 1."""
    servers = gpus // tp
    if servers < 1 or servers * tp != gpus:
        raise ValueError(f"{gpus} GPUs cannot be split into servers of TP {tp}")
    names = ["agg" if servers == 1 else f"aggx{servers}"]
    names += [f"{x}p{servers - x}d" for x in range(1, servers)]
    return names
