"""The PD legs of a request's path, with SGLang's KV-transfer metrics and failures.

* Prefill (:meth:`Handover.send`): once the engine has computed the prompt, its KV leaves on the
  server's modelled link (:meth:`sglbench.sim.engine.Engine.send_kv`; ``--sim-kv-transfer-delay-ms``
  is added to every transfer), and the request's ``bootstrap_room`` is marked transferred for the
  decode server, which polls it. Observed at the transfer's end, as SGLang's prefill does:
  ``kv_transfer_latency_ms`` / ``total_mb`` / ``speed_gb_s``, stage ``prefill_transfer_kv_cache``
  (prefill end to KV arrived, on the model's clock) and ``kv_transfer_bootstrap_ms`` /
  ``alloc_ms`` (0: the simulator's decode is always ready).
* Decode (:meth:`Handover.receive`): the handshake is the first poll of the room (stage
  ``decode_bootstrap``, ``kv_transfer_bootstrap_ms``, from when its scheduler would have the
  request); then it waits until the KV arrived (stage ``decode_transferred``); its waiting
  queue (``decode_waiting``, ``queue_time_seconds``) starts then.
* ``--sim-kv-transfer-fail-rate F`` fails a seeded share F of the transfers at their end the way
  mooncake does: the prefill counts ``num_transfer_failed_reqs_total`` and answers SGLang's
  "Prefill transfer failed ..." error, the room is marked failed with the reason, and the decode
  counts its own failure and answers "Decode transfer failed ...". No ``kv_transfer_*`` histogram
  is observed for a failed transfer. A prefill bootstrap server the decode cannot reach is a
  handshake failure (``num_bootstrap_failed_reqs_total`` on the decode).

The queue gauges of both roles are counted here (:class:`PdQueues`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from sglbench.sim import timing
from sglbench.sim.bootstrap import BootstrapClient, KvBootstrapError, KvTransferError, RoomRegistry
from sglbench.sim.config import SimArgs
from sglbench.sim.engine import Engine
from sglbench.sim.engine_types import ReqTimes
from sglbench.sim.telemetry import Telemetry

RANK = 0  # the simulator's one scheduler: tp_rank 0


class KvFailed(Exception):
    """A request failed in the PD hand-over; the message is SGLang's error for it."""


@dataclass
class PdQueues:
    """Requests in each PD queue now (SGLang's ``num_prefill_*`` / ``num_decode_*`` gauges)."""

    bootstrap: int = 0  # prefill: waiting for the handshake (never, in the simulator)
    inflight: int = 0  # prefill: KV transfer in flight
    prealloc: int = 0  # decode: waiting for the handshake and the KV allocation
    transfer: int = 0  # decode: KV slots published, waiting for the KV to land


def _with_exception(room: int, reason: str) -> str:
    # SGLang appends the backend's KVTransferError to its message (str() of the exception).
    return f" with exception KVTransferError(bootstrap_room={room}): {reason}"


class Handover:
    """Both PD legs of one server (only the one of its role is used)."""

    def __init__(self, args: SimArgs, engine: Engine, telemetry: Telemetry,
                 rooms: RoomRegistry | None) -> None:  # fmt: skip
        """Legs of a server started with ``args``; ``rooms`` is a prefill's registry."""
        self._engine = engine
        self._telemetry = telemetry
        self._rooms = rooms
        self._client = BootstrapClient()
        self._delay_s = args.sim_kv_transfer_delay_ms / 1e3
        self._fail_rate = args.sim_kv_transfer_fail_rate
        self._fail_rng = random.Random(args.sim_seed + 2)
        self.queues = PdQueues()

    async def close(self) -> None:
        """Close the decode side's HTTP session."""
        await self._client.close()

    async def send(self, rid: str, room: int, prompt_len: int, times: ReqTimes,
                   start: float) -> None:  # fmt: skip
        """Prefill: move the KV of a prefill that ended at ``start``; the room is then marked.

        Raises:
            KvFailed: the transfer failed (``--sim-kv-transfer-fail-rate``).
        """
        loop = asyncio.get_running_loop()
        self.queues.inflight += 1
        try:
            arrived = await self._engine.send_kv(prompt_len, start) + self._delay_s
            if (delay := arrived - loop.time()) > 0:
                await asyncio.sleep(delay)
            if self._fail_rate > 0 and self._fail_rng.random() < self._fail_rate:
                self._fail(rid, room)
            nbytes = timing.kv_bytes(self._engine.profile, prompt_len)
            self._telemetry.kv_transferred(nbytes, arrived - start)
            # Bootstrap: the decode's metadata was there when the scheduler took the request.
            self._telemetry.handshake(0.0, 0.0)
            if self._rooms is not None:
                self._rooms.mark(room, "done", cached_tokens=times.cached_tokens)
        finally:
            self.queues.inflight -= 1

    def _fail(self, rid: str, room: int) -> None:
        reason = (f"Failed to send kv chunk of {room} to the decode server (injected by"
                  " --sim-kv-transfer-fail-rate)")  # fmt: skip
        self._telemetry.transfer_failures.inc(1)
        if self._rooms is not None:
            self._rooms.mark(room, "failed", reason=reason)
        raise KvFailed(f"Prefill transfer failed for request rank={RANK} req.rid={rid!r} "
                       f"req.bootstrap_room={room}" + _with_exception(room, reason))

    async def receive(self, rid: str, host: str, port: int, room: int, arrival: float,
                      times: ReqTimes) -> int:  # fmt: skip
        """Decode: return once the room's KV arrived; the prefill's cached prompt tokens.

        ``arrival`` is the request's receipt (``time.monotonic()``).

        Raises:
            KvFailed: the handshake or the transfer failed.
        """
        # SGLang's decode scheduler gets the request (prealloc queue) after its tokenizer, as
        # the prefill's does: both sides' stages start one modelled request latency late.
        eff, scale = self._engine.profile.efficiency, self._engine.config.time_scale
        entered = arrival + eff.request_latency_ms * scale / 1e3
        polled = time.monotonic()  # the first poll of the room is the handshake
        self._telemetry.stage("decode_bootstrap", polled - entered)
        self._telemetry.handshake(polled - entered, 0.0)  # KV slots are reserved at admission
        self.queues.transfer += 1
        try:
            cached = await self._client.wait_transferred(host, port, room)
        except KvBootstrapError as exc:
            self._telemetry.bootstrap_failures.inc(1)
            raise KvFailed(self._decode_error("handshake", rid, room, str(exc))) from exc
        except KvTransferError as exc:
            self._telemetry.transfer_failures.inc(1)
            raise KvFailed(self._decode_error("transfer", rid, room, str(exc))) from exc
        finally:
            self.queues.transfer -= 1
        self._telemetry.stage("decode_transferred", time.monotonic() - max(entered, polled))
        times.kv_landed_at = asyncio.get_running_loop().time()  # decode_waiting starts here
        return cached

    @staticmethod
    def _decode_error(what: str, rid: str, room: int, reason: str) -> str:
        return (f"Decode {what} failed for request rank={RANK} decode_req.req.rid={rid!r} "
                f"decode_req.req.bootstrap_room={room}" + _with_exception(room, reason))
