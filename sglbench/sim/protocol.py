"""Request parsing and response pieces shared by the native and the OpenAI endpoints.

Validation follows SGLang's messages where it has one; every problem is a :class:`BadRequest`
(HTTP 400, ``{"error": {"message": ...}}``), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from sglbench.sim.service import (
    BadRequest,
    Bootstrap,
    Job,
    NotReady,
    ServerFailure,
    SimService,
    Token,
)

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's SamplingParams default
UserError = (BadRequest, NotReady, ServerFailure)
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def as_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def int_field(params: Mapping[str, Any], key: str, default: int | None, minimum: int) -> int:
    """An integer field >= ``minimum`` (booleans and floats refused)."""
    value = params.get(key)
    if value is None:
        if default is None:
            raise BadRequest(f"{key} is required")
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise BadRequest(f"{key} must be at least {minimum}, got {value}.")
    return value


def check_sampling(params: Mapping[str, Any]) -> None:
    """Range checks SGLang makes on common sampling parameters."""
    temperature = params.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or temperature < 0):
        raise BadRequest(f"temperature must be non-negative, got {temperature}.")
    top_p = params.get("top_p")
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        raise BadRequest(f"top_p must be in (0, 1], got {top_p}.")


def prompt_lengths(service: SimService, prompt: Any, field: str) -> tuple[list[int], bool]:
    """Token counts of a prompt given as text, ids, or a batch of either.

    Returns:
        One length per prompt and whether the request was a batch.
    """
    if isinstance(prompt, str):
        return [service.tokenizer.count(prompt)], False
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [service.tokenizer.count(p) for p in prompt], True
        if all(_is_ids(p) for p in prompt):
            return [len(p) for p in prompt], True
        if _is_ids(prompt):
            return [len(prompt)], False
    raise BadRequest(
        f"{field} must be a non-empty string, a list of token ids, or a batch (list) of either"
    )


def _is_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    )


def bootstrap_of(body: Mapping[str, Any], index: int, default_port: int) -> Bootstrap | None:
    """The PD bootstrap fields a router added (``bootstrap_room`` may be a list for batches)."""
    host, room = body.get("bootstrap_host"), body.get("bootstrap_room")
    if host is None and room is None:
        return None
    if isinstance(room, list):
        room = room[index] if index < len(room) else None
    port = body.get("bootstrap_port")
    if isinstance(port, list):
        port = port[index] if index < len(port) else None
    if isinstance(host, list):
        host = host[index] if index < len(host) else None
    if not isinstance(host, str) or not isinstance(room, int) or isinstance(room, bool):
        raise BadRequest("bootstrap_host must be a string and bootstrap_room an integer")
    if port is None:
        port = default_port  # routers send null when the prefill's port was not given
    if not isinstance(port, int) or isinstance(port, bool):
        raise BadRequest(f"bootstrap_port must be an integer, got {port!r}")
    return Bootstrap(host=host, port=port, room=room)


def rid_of(body: Mapping[str, Any], index: int) -> str | None:
    """The caller's request id (``rid``), if any."""
    rid = body.get("rid")
    if isinstance(rid, list):
        rid = rid[index] if index < len(rid) else None
    return rid if isinstance(rid, str) else None


def make_jobs(
    service: SimService, body: Mapping[str, Any], lengths: list[int], max_new: list[int]
) -> list[Job]:
    """One job per prompt, with its rid and bootstrap information."""
    port = service.args.disaggregation_bootstrap_port
    return [
        service.new_job(rid_of(body, i), n, max_new[i], bootstrap_of(body, i, port))
        for i, n in enumerate(lengths)
    ]


async def merged(service: SimService, jobs: list[Job]) -> AsyncGenerator[tuple[int, Token], None]:
    """Tokens of several jobs as they come, tagged with the job's index."""
    if len(jobs) == 1:  # the common case: no queue, no extra tasks
        async with contextlib.aclosing(service.run(jobs[0])) as tokens:
            async for token in tokens:
                yield 0, token
        return
    queue: asyncio.Queue[tuple[int, Token | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, job: Job) -> None:
        try:
            async with contextlib.aclosing(service.run(job)) as tokens:
                async for token in tokens:
                    queue.put_nowait((i, token))
            queue.put_nowait((i, None))
        except Exception as exc:
            queue.put_nowait((i, exc))

    tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    try:
        remaining = len(jobs)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


async def collect(service: SimService, jobs: list[Job]) -> list[TextState]:
    """The whole output of every job (non-streaming answers); engine errors propagate."""
    states = [TextState() for _ in jobs]
    async with contextlib.aclosing(merged(service, jobs)) as tokens:
        async for i, token in tokens:
            states[i].add(token)
            jobs[i].deadlines.append(token.deadline)
    return states


def held_back(token: Token, interval: int) -> bool:
    """Whether ``token`` goes out with a later chunk instead of its own.

    ``--stream-interval N``: one chunk per N tokens, as in SGLang. And a reader that fell behind
    the engine (the next token is already due: this machine's CPU, not the model, is late) sends
    only the newest state, as SGLang's tokenizer manager does when several outputs queued up.
    Chunks carry the cumulative text and ``completion_tokens``, so nothing is lost; SGLang's bench
    client splits a chunk's gap evenly over its new tokens, so a merged chunk leaves its mean
    ITL unchanged and turns a late burst (gaps near 0, then one long gap) into even gaps.
    """
    if token.finished:
        return False
    return token.more_due or (token.index + 1) % interval != 0


def finish_reason(completion_tokens: int) -> dict[str, Any]:
    """SGLang's finish reason: the simulator always stops on the length limit."""
    return {"type": "length", "length": completion_tokens}


class TextState:
    """Cumulative output of one job, kept JSON-escaped so a chunk costs no re-encoding."""

    __slots__ = ("ids", "ids_json", "text", "text_json")

    def __init__(self) -> None:
        """Start empty."""
        self.ids: list[int] = []
        self.text = ""
        self.text_json = ""
        self.ids_json = ""

    def add(self, token: Token) -> None:
        """Append a token."""
        self.ids.append(token.token_id)
        self.text += token.text
        self.text_json += token.text_json
        self.ids_json += f",{token.token_id}" if self.ids_json else str(token.token_id)
