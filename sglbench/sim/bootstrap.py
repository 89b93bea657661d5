"""PD hand-over between a prefill and a decode simulator, over the network like SGLang's.

A prefill server listens on ``--disaggregation-bootstrap-port`` (as SGLang's prefill does). When
its engine has computed a request's prompt, the server waits the modelled KV-transfer time and
marks the request's ``bootstrap_room`` as transferred in a :class:`RoomRegistry`. A decode server
that receives the same request (a PD router sends it to both at once) long-polls
``GET http://{bootstrap_host}:{bootstrap_port}/sim/kv/{room}?timeout=S`` until the room is
transferred, and only then starts decoding: so TTFT through a router includes prefill and
transfer, whatever the router does.

A room's answer carries what the decode needs to report as SGLang's decode does: the prefill's
cached prompt tokens (``cached_tokens``), or why the transfer failed (``reason``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

log = logging.getLogger("sglbench.sim")

RoomState = Literal["pending", "done", "failed"]
ROOM_TTL_S = 600.0
POLL_S = 10.0


class KvTransferError(Exception):
    """The KV of a bootstrap room never arrived (the prefill failed it, or it was too slow)."""


class KvBootstrapError(KvTransferError):
    """The handshake failed: the prefill's bootstrap server could not be reached."""


@dataclass
class _Room:
    created: float
    state: RoomState = "pending"
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""  # why it failed
    cached_tokens: int = 0  # prompt tokens the prefill served from its prefix cache


class RoomRegistry:
    """Prefill side: the state of every bootstrap room seen recently."""

    def __init__(self, ttl_s: float = ROOM_TTL_S) -> None:
        """Keep rooms for ``ttl_s`` seconds (decode servers poll within that time)."""
        self._rooms: dict[int, _Room] = {}
        self._ttl = ttl_s
        self._marks = 0

    def _room(self, room: int) -> _Room:
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room(created=asyncio.get_running_loop().time())
        return entry

    def mark(self, room: int, state: RoomState, reason: str = "", cached_tokens: int = 0) -> None:
        """Record that ``room``'s KV is transferred (``done``) or will never be (``failed``)."""
        entry = self._room(room)
        entry.state = state
        entry.reason = reason
        entry.cached_tokens = cached_tokens
        entry.changed.set()
        self._marks += 1
        if self._marks % 1024 == 0:
            self._prune()

    async def wait(self, room: int, timeout_s: float) -> dict[str, object]:
        """The room's answer once it is no longer pending, or ``pending`` after ``timeout_s``."""
        entry = self._room(room)
        if entry.state == "pending":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(entry.changed.wait(), timeout_s)
        return {"room": room, "state": entry.state, "reason": entry.reason,
                "cached_tokens": entry.cached_tokens}  # fmt: skip

    def _prune(self) -> None:
        horizon = asyncio.get_running_loop().time() - self._ttl
        for room in [r for r, e in self._rooms.items() if e.created < horizon]:
            del self._rooms[room]


def bootstrap_app(registry: RoomRegistry) -> web.Application:
    """The prefill server's bootstrap listener: ``/health`` and the room long-poll."""

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def room(request: web.Request) -> web.Response:
        try:
            number = int(request.match_info["room"])
            timeout = min(float(request.query.get("timeout", POLL_S)), 60.0)
        except ValueError:
            return web.json_response(
                {"error": {"message": "room and timeout must be numbers"}}, status=400
            )
        return web.json_response(await registry.wait(number, max(timeout, 0.0)))

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/sim/kv/{room}", room)
    return app


class BootstrapClient:
    """Decode side: waits until a prefill server reports a room's KV as transferred."""

    def __init__(self, deadline_s: float = 300.0, connect_retry_s: float = 5.0) -> None:
        """Give up after ``deadline_s`` in total, or ``connect_retry_s`` without a connection."""
        self._deadline = deadline_s
        self._connect_retry = connect_retry_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def wait_transferred(self, host: str, port: int, room: int) -> int:
        """Return when the room's KV is on this (decode) side: the prefill's cached tokens.

        Raises:
            KvBootstrapError: the prefill's bootstrap server could not be reached.
            KvTransferError: the prefill failed the request, or the KV did not arrive within
                the deadline.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        loop = asyncio.get_running_loop()
        start = loop.time()
        url = f"http://{_url_host(host)}:{port}/sim/kv/{room}"
        unreachable_since: float | None = None
        while (left := start + self._deadline - loop.time()) > 0:
            try:
                params = {"timeout": str(min(POLL_S, left))}
                async with self._session.get(url, params=params) as resp:
                    answer = await resp.json() if resp.status == 200 else {}
                unreachable_since = None
            except (aiohttp.ClientError, ValueError) as exc:
                now = loop.time()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self._connect_retry:
                    raise KvBootstrapError(
                        f"cannot reach the prefill bootstrap server at {host}:{port}: {exc}"
                    ) from exc
                await asyncio.sleep(0.05)
                continue
            state = answer.get("state")
            if state == "done":
                return int(answer.get("cached_tokens") or 0)
            if state == "failed":
                raise KvTransferError(
                    answer.get("reason") or f"the prefill server failed bootstrap_room {room}"
                )
        raise KvTransferError(
            f"the KV of bootstrap_room {room} did not arrive from {host}:{port}"
            f" within {self._deadline:.0f} s"
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
