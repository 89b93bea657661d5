"""Request parsing and validation shared by the native and the OpenAI endpoints.

Everything here runs before anything is allocated for a request: the lengths of every prompt
are known and checked against the model's context (``prompt + max_new_tokens``) and the token
ids against its vocabulary, so no size in a request can make the server work or allocate in
proportion to it. SGLang 0.5.23 refuses a bad request at one of three layers, each with its own
HTTP 400 body; the simulator raises the matching error:

* :class:`InvalidBody`: the body does not parse into SGLang's request type (FastAPI/pydantic;
  SGLang answers ``{"object": "error", "message", "type": "Bad Request", "param", "code"}``);
* :class:`ContractError`: ``/generate``'s JSON contract (``sglang.api.v1``), ``{"error": text}``;
* :class:`~sglbench.sim.service.BadRequest`: the tokenizer manager's checks (context length,
  value ranges), ``{"error": {"message"}}`` natively, ``BadRequestError`` on ``/v1``.

Messages follow SGLang's where it has one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sglbench.sim.service import BadRequest, Bootstrap, Job, SimService

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's SamplingParams default
_I64 = 2**63


class InvalidBody(BadRequest):
    """The body does not parse into SGLang's request type (its pydantic/FastAPI layer)."""


class ContractError(BadRequest):
    """``/generate``'s JSON contract refuses a value (wrong JSON type)."""


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidBody naming the problem."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidBody("the request body must be a JSON object")
    return body


def _unexpected(value: Any) -> str:
    """A JSON value as the contract's errors name it (serde's wording)."""
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return "sequence" if isinstance(value, list) else "map" if isinstance(value, dict) else "null"


def contract_int(params: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    """A native integer sampling parameter: a JSON integer (contract), then ``>= minimum``."""
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContractError(f"invalid type: {_unexpected(value)}, expected i64")
    if value < minimum:
        raise BadRequest(f"{key} must be at least {minimum}, got {value}.")
    return value


def lax_int(body: Mapping[str, Any], key: str, default: int) -> int:
    """An OpenAI integer field as pydantic reads it: an integer or an integral float in i64."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer() and abs(value) < _I64:
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidBody(f"{key}: Input should be a valid integer, got {value!r}")
    return value


def check_sampling(params: Mapping[str, Any], wrong_type: type[BadRequest]) -> None:
    """SGLang's checks of ``temperature`` and ``top_p`` (``wrong_type``: the type error's layer)."""
    for key in ("temperature", "top_p"):
        value = params.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            if wrong_type is ContractError:
                raise ContractError(f"invalid type: {_unexpected(value)}, expected f64")
            raise wrong_type(f"{key}: Input should be a valid number, got {value!r}")
    temperature = params.get("temperature")
    if temperature is not None and not 0 <= temperature < float("inf"):
        raise BadRequest(f"temperature must be a non-negative finite number, got {temperature}.")
    top_p = params.get("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise BadRequest(f"top_p must be in (0, 1], got {top_p}.")


def token_ids(value: Any, field: str) -> list[list[int]] | None:
    """``value`` as one or more lists of token ids, or None if it holds none (it is text).

    Raises:
        InvalidBody: a list that mixes ids with other things, as SGLang's validator refuses.
    """
    if not isinstance(value, list) or not value or isinstance(value[0], str):
        return None
    rows = value if isinstance(value[0], list) else [value]
    for i, row in enumerate(rows):
        where = f"{field}: row {i}" if isinstance(value[0], list) else field
        if not isinstance(row, list):
            raise InvalidBody(f"{where}: must be a list of token ids; got {type(row).__name__}")
        if not all(type(t) is int for t in row):  # bool is not a token id
            bad = next(t for t in row if type(t) is not int)
            raise InvalidBody(f"{where}: elements must be int; got {type(bad).__name__}")
    return rows


def check_vocabulary(rows: list[list[int]], vocab: int, field: str) -> None:
    """Every id in ``[0, vocab)`` (a GPU would index its embedding table with them)."""
    for row in rows:
        if row and (min(row) < 0 or max(row) >= vocab):
            bad = next(t for t in row if not 0 <= t < vocab)
            raise BadRequest(
                f"{field} contains out-of-vocabulary token id {bad}; valid range is [0, {vocab})"
            )


def prompt_tokens(
    service: SimService, prompt: Any, field: str, text: bool, ids: bool
) -> tuple[list[list[int]], bool]:
    """The tokens of a prompt given as text (if ``text``), ids (if ``ids``) or a batch.

    Returns:
        One token list per prompt and whether the request was a batch.
    """
    rows = token_ids(prompt, field) if ids else None
    if rows is not None:
        if any(not row for row in rows):
            raise BadRequest(f"{field} cannot be empty.")
        check_vocabulary(rows, service.engine.profile.model.vocab, field)
        return rows, isinstance(prompt[0], list)
    if text and isinstance(prompt, str):
        return [service.tokenizer.prompt_ids(prompt)], False
    if text and isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        if not prompt:
            raise BadRequest(f"{field} cannot be empty.")
        return [service.tokenizer.prompt_ids(p) for p in prompt], True
    if ids and isinstance(prompt, list) and not prompt:
        raise BadRequest(f"{field} cannot be empty.")
    kinds = " or ".join(k for k, on in (("text", text), ("token ids", ids)) if on)
    raise InvalidBody(f"{field}: must be {kinds}, or a batch (list) of them; got {prompt!r:.80}")


def check_context(lengths: list[int], max_new: list[int], context: int) -> None:
    """SGLang's tokenizer-manager length checks, before anything is allocated for the request."""
    for n, new in zip(lengths, max_new, strict=True):
        if n >= context:
            raise BadRequest(
                f"The input ({n} tokens) is longer than the model's context length"
                f" ({context} tokens)."
            )
        if n + new > context:
            raise BadRequest(
                "Requested token count exceeds the model's maximum context length of"
                f" {context} tokens. You requested a total of {n + new} tokens: {n} tokens from"
                f" the input messages and {new} tokens for the completion. Please reduce the"
                " number of tokens in the input messages or the completion to fit within the"
                " limit."
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


def stream_flag(body: Mapping[str, Any], wrong_type: type[BadRequest]) -> bool:
    """The ``stream`` field (false when absent)."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise wrong_type(f"stream must be true or false, got {stream!r}")
    return stream


def make_jobs(
    service: SimService, body: Mapping[str, Any], prompts: list[list[int]], max_new: list[int]
) -> list[Job]:
    """One job per prompt, with its rid and bootstrap information, once the lengths fit."""
    lengths = [len(p) for p in prompts]
    check_context(lengths, max_new, service.engine.profile.model.max_context)
    port = service.args.disaggregation_bootstrap_port
    streaming = body.get("stream") is True  # checked by the caller (stream_flag)
    return [
        service.new_job(
            rid_of(body, i), n, max_new[i], bootstrap_of(body, i, port), prompts[i], streaming
        )
        for i, n in enumerate(lengths)
    ]
