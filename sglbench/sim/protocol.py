"""Request parsing shared by the native and the OpenAI endpoints.

Validation follows SGLang's messages where it has one; every problem is a :class:`BadRequest`
(HTTP 400, ``{"error": {"message": ...}}``), never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sglbench.sim.service import BadRequest, Bootstrap, Job, SimService

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's SamplingParams default


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest naming the problem."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    return as_object(body)


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
