"""Shared hardware of the simulator: one GPU used by several servers, one KV-transfer link.

Both are fluid queues on the event loop's clock (a real one in the HTTP server, a virtual one in
:mod:`sglbench.sim.replay`): a job of ``size`` units is served at ``capacity * w / W`` units per
second, where ``w`` is its weight and ``W`` the sum of the weights of the jobs in service. Each
job resolves with the exact model time at which it ends, whatever the loop's lateness.

* :class:`SharedGpu` (weight 1: processor sharing). Without MPS, the CUDA contexts of two server
  processes on one GPU time-slice it: while passes of both servers are in flight, each gets
  about half of the GPU, so a pass that would take ``d`` alone takes up to ``2 d``. This is what
  a prefill and a decode server on the same GPU (``pd_intra``) pay, and what an aggregated
  server does not: there, prefill and decode are sequential passes of one process.
* :class:`KvLink` (weight = size). SGLang's transfer backends post a request's KV as one
  descriptor per layer and K/V buffer (``disaggregation/nixl/conn.py`` ``send_kvcache``,
  mooncake likewise), and the engine below serves the descriptors of all posted transfers in
  turn. Every transfer then has the same number of pieces, so transfers posted together finish
  together, however long each prompt is; a transfer posted later finishes one "round" later.
  Weighting each job by its size reproduces exactly that (each job's *fraction* done grows at
  the same rate). On a slow path (TCP-class NIXL between nodes) this makes a burst of requests
  wait for the whole burst's KV before any of them can decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

from sglbench.errors import ConfigError

_EPS = 1e-12


@dataclass(eq=False)
class _Job:
    finish_v: float
    weight: float
    future: asyncio.Future[float]


class _FluidQueue:
    """Weighted processor sharing on the running loop's clock (see the module docstring)."""

    def __init__(self, capacity: float, weighted_by_size: bool) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self._capacity = capacity
        self._by_size = weighted_by_size
        self._v = 0.0  # virtual progress: each job's work done / its weight
        self._t = 0.0  # model time of _v
        self._weights = 0.0
        self._jobs: list[_Job] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> int:
        """Jobs in service now."""
        return len(self._jobs)

    def submit(self, size: float, start: float) -> asyncio.Future[float]:
        """Start a job of ``size`` units at model time ``start``; resolves with its end time.

        ``start`` is now (or a moment ago, when the loop runs late): never a future time, which
        would shift the jobs submitted after it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        if size <= 0:
            future.set_result(start)
            return future
        self._advance(max(start, self._t) if self._jobs else start)
        weight = size if self._by_size else 1.0
        self._jobs.append(_Job(self._v + size / weight, weight, future))
        self._weights += weight
        self._reschedule(loop)
        return future

    def _advance(self, t: float) -> None:
        if self._jobs and t > self._t:
            self._v += (t - self._t) * self._capacity / self._weights
        self._t = max(self._t, t) if self._jobs else t

    def _reschedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._jobs:
            return
        first = min(job.finish_v for job in self._jobs)
        end = self._t + max(0.0, first - self._v) * self._weights / self._capacity
        self._timer = loop.call_at(end, self._on_timer, end, first)

    def _on_timer(self, end: float, first_v: float) -> None:
        self._timer = None
        self._advance(end)
        # Snap to the job the timer was set for: rounding must never leave it unfinished.
        self._v = max(self._v, first_v)
        limit = self._v + _EPS * max(1.0, abs(self._v))
        done = [job for job in self._jobs if job.finish_v <= limit]
        for job in done:
            self._jobs.remove(job)
            self._weights -= job.weight
            if not job.future.done():
                job.future.set_result(end)
        if not self._jobs:
            self._weights = 0.0
        self._reschedule(asyncio.get_running_loop())


class StreamPath:
    """A single-process FIFO every streamed token passes (an output path, a router).

    Each token costs ``us_per_token`` of that process's CPU; tokens are served in the order the
    engines emit them, so past ``1e6 / us_per_token`` tokens/s they queue and reach the client
    late. O(1) per token.
    """

    __slots__ = ("_cost", "_free_at")

    def __init__(self, us_per_token: float) -> None:
        """A path costing ``us_per_token`` microseconds per token (already time-scaled)."""
        self._cost = us_per_token / 1e6
        self._free_at = 0.0

    def deliver(self, t: float) -> float:
        """When a token produced at ``t`` has passed the path."""
        self._free_at = max(t, self._free_at) + self._cost
        return self._free_at


class SharedGpu:
    """One GPU whose busy time is shared by the servers placed on it (processor sharing)."""

    def __init__(self) -> None:
        """An idle GPU; engines created with ``EngineConfig(gpu=...)`` share it."""
        self._queue = _FluidQueue(1.0, weighted_by_size=False)

    async def run(self, busy_seconds: float, start: float) -> float:
        """Serve ``busy_seconds`` of exclusive GPU work from ``start``; return its end time."""
        return await self._queue.submit(busy_seconds, start)

    def close(self) -> None:
        """Release what the GPU holds (nothing here; a :class:`PeerGpu` its socket)."""


class KvLink:
    """The KV path out of a prefill server: bandwidth shared size-proportionally, plus latency."""

    def __init__(self, bandwidth_GBps: float, latency_ms: float) -> None:
        """``bandwidth_GBps`` in 10^9 B/s; ``latency_ms`` is added to every transfer."""
        self._queue = _FluidQueue(bandwidth_GBps * 1e9, weighted_by_size=True)
        self._latency = latency_ms / 1e3

    @property
    def in_flight(self) -> int:
        """Transfers on the wire now."""
        return self._queue.busy

    async def send(self, nbytes: float, start: float, time_scale: float = 1.0) -> float:
        """Move ``nbytes`` posted at ``start``; return the model time the KV has arrived.

        ``time_scale`` (``--sim-time-scale``) stretches the transfer like every modelled time.
        """
        end = await self._queue.submit(nbytes * time_scale, start)
        return end + self._latency * time_scale


class PeerGpu(SharedGpu):
    """A :class:`SharedGpu` whose other users are simulator processes on this host.

    Two HTTP servers on one GPU (``pd_intra``) are two processes, so each keeps a mirror of
    the GPU: every pass it starts is also sent (start time and GPU seconds, 16 bytes) to the
    other members of the group over Unix datagram sockets in ``directory``, and every pass a
    member announces joins the local mirror at its start time. All members then compute the
    same processor-sharing schedule; ``loop.time()`` is the host's monotonic clock in every
    process. A message that arrives late (tens of microseconds on loopback) joins at arrival.
    """

    def __init__(self, group: str, directory: str | None = None) -> None:
        """Join ``group`` (``--sim-shared-gpu``); sockets live in ``directory`` (default tmp)."""
        super().__init__()
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", group):
            raise ConfigError(f"--sim-shared-gpu {group!r}: use letters, digits and ._- only")
        self._dir = directory or tempfile.gettempdir()
        self._prefix = f"sglbench-gpu-{group}-"
        self._path = os.path.join(self._dir, f"{self._prefix}{os.getpid()}.sock")
        self._sock: Any = None

    def _open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self._path)
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._receive)

    def _peers(self) -> list[str]:
        names = [n for n in os.listdir(self._dir) if n.startswith(self._prefix)]
        return [
            os.path.join(self._dir, n) for n in names if os.path.join(self._dir, n) != self._path
        ]

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(64)
            except BlockingIOError:
                return
            if len(data) == 16:
                start, busy = struct.unpack("!dd", data)
                # Someone else's pass: it occupies the GPU; nobody here awaits it.
                self._queue.submit(busy, start)

    async def run(self, busy_seconds: float, start: float) -> float:
        """Announce the pass to the group, then serve it on the local mirror."""
        import contextlib

        if self._sock is None:
            self._open()
        message = struct.pack("!dd", start, busy_seconds)
        for peer in self._peers():
            with contextlib.suppress(OSError):  # a member that exited leaves a stale socket
                self._sock.sendto(message, peer)
        return await super().run(busy_seconds, start)

    def close(self) -> None:
        """Leave the group (remove the socket)."""
        import contextlib

        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
