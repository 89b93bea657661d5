"""SGLang's native endpoints: ``/generate``, health, info, ``/flush_cache`` and ``/metrics``.

A streamed ``/generate`` answers SGLang's SSE: one
``data: {"text": <cumulative>, "output_ids": [<cumulative>], "meta_info": {...}}`` per token,
written as soon as the engine's deadline for that token has passed (the loop is
:func:`sglbench.sim.stream.stream_sse`), ``finish_reason`` only on the last one, then
``data: [DONE]``. Errors use the body of the SGLang layer that would refuse the request (see
:mod:`sglbench.sim.protocol`); most are ``{"error": {"message": ...}}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from sglbench.sim import info
from sglbench.sim.engine import EngineStopped
from sglbench.sim.metrics import render_metrics
from sglbench.sim.protocol import (
    DEFAULT_MAX_NEW_TOKENS,
    ContractError,
    InvalidBody,
    check_sampling,
    contract_int,
    make_jobs,
    parse_body,
    prompt_tokens,
    stream_flag,
)
from sglbench.sim.service import BadRequest, Job, RequestError, ServerFailure, SimService, Token
from sglbench.sim.stream import collect, json_str, stream_sse

# prometheus_client's CONTENT_TYPE_PLAIN_0_0_4 (what SGLang's /metrics answers).
METRICS_HEADERS = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


def error_response(exc: RequestError) -> web.Response:
    """SGLang's native error body of the layer that refused the request (see protocol)."""
    body: dict[str, Any]
    if isinstance(exc, InvalidBody):
        body = {"object": "error", "message": str(exc), "type": "Bad Request", "param": None,
                "code": exc.status}  # fmt: skip
    elif isinstance(exc, ContractError):
        body = {"error": str(exc)}
    else:
        body = {"error": {"message": str(exc)}}
    return web.json_response(body, status=exc.status)


def finish_reason(completion_tokens: int) -> dict[str, Any]:
    """SGLang's finish reason: the simulator always stops on the length limit."""
    return {"type": "length", "length": completion_tokens}


def add_routes(app: web.Application, service: SimService) -> None:
    """Register the native routes for ``service``."""

    async def health(_: web.Request) -> web.Response:
        """``/health`` and ``/health_generate``: 503 while starting, 200 when ready."""
        return web.Response(status=200 if service.ready else 503)

    async def model_info(_: web.Request) -> web.Response:
        return web.json_response(info.model_info(service.args))

    async def server_info(_: web.Request) -> web.Response:
        """Server args + internal state, marked simulated."""
        return web.json_response(info.server_info(service.args, service.engine))

    async def metrics(_: web.Request) -> web.Response:
        """Prometheus text (format 0.0.4) in SGLang's names, whatever ``Accept`` asks."""
        return web.Response(body=render_metrics(service).encode(), headers=METRICS_HEADERS)

    async def flush(request: web.Request) -> web.Response:
        return await flush_cache(request, service)

    async def generate(request: web.Request) -> web.StreamResponse:
        return await _generate(request, service)

    add = app.router.add_route
    for path in ("/health", "/health_generate"):
        add("GET", path, health)
    for path in ("/model_info", "/get_model_info"):
        add("GET", path, model_info)
    for path in ("/server_info", "/get_server_info"):
        add("GET", path, server_info)
    for method in ("GET", "POST"):
        add(method, "/flush_cache", flush)
    add("GET", "/metrics", metrics)
    for method in ("POST", "PUT"):
        add(method, "/generate", generate)


FLUSHED = (
    "Cache flushed.\nPlease check backend logs for more details. (When there are running or"
    " waiting requests, the operation will not be performed.)\n"
)


async def flush_cache(request: web.Request, service: SimService) -> web.Response:
    """``/flush_cache``: empty the prefix cache once idle (``?timeout=S`` waits up to S s).

    SGLang's answers: 200 and its text when flushed, 400 with the reason when not.
    """
    try:
        timeout = float(request.query.get("timeout", "0"))
    except ValueError:
        timeout = -1.0
    if not timeout >= 0:  # also NaN
        return web.Response(status=400, text="timeout must be a number >= 0\n")
    done, why = await service.flush_cache(timeout)
    if done:
        return web.Response(text=FLUSHED)
    return web.Response(status=400, text=why or "Flush cache failed.\n")


async def _generate(request: web.Request, service: SimService) -> web.StreamResponse:
    """``POST /generate``: SGLang's native generation, streamed or not, single or batch."""
    try:
        body = parse_body(await request.read())
        jobs, batch, stream = _parse_generate(service, body)
    except BadRequest as exc:
        return error_response(exc)
    try:
        if stream:
            return await stream_sse(request, service, jobs, NativeFormat(jobs, batch))
        return await _collect_generate(service, jobs, batch)
    finally:
        for job in jobs:
            service.finished(job)


def _parse_generate(service: SimService, body: dict[str, Any]) -> tuple[list[Job], bool, bool]:
    """Jobs, batch flag and stream flag of a native request."""
    if body.get("text") is not None:
        prompts, batch = prompt_tokens(service, body["text"], "text", text=True, ids=False)
    elif body.get("input_ids") is not None:
        prompts, batch = prompt_tokens(
            service, body["input_ids"], "input_ids", text=False, ids=True
        )
    else:
        raise BadRequest("Either text, input_ids or input_embeds should be provided.")
    params = body.get("sampling_params") or {}
    per_prompt = params if isinstance(params, list) else [params] * len(prompts)
    if len(per_prompt) != len(prompts) or not all(isinstance(p, dict) for p in per_prompt):
        raise BadRequest("sampling_params must be an object (or one object per prompt)")
    for p in per_prompt:
        check_sampling(p, ContractError)
    max_new = [contract_int(p, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS, 0) for p in per_prompt]
    stream = stream_flag(body, InvalidBody)
    return make_jobs(service, body, prompts, max_new), batch, stream


def _meta(job: Job, completion: int, finished: bool, now: float) -> dict[str, Any]:
    return {
        "id": job.rid,
        "finish_reason": finish_reason(completion) if finished else None,
        "prompt_tokens": job.prompt_len,
        "weight_version": "default",
        "total_retractions": 0,
        "completion_tokens": completion,
        "cached_tokens": job.cached_tokens,
        "e2e_latency": now - job.arrival,
    }


class _Chunks:
    """SSE events of one streamed job, assembled from bytes made once per request: at hundreds
    of streams the server writes tens of thousands of events a second, and a JSON encoder per
    event would be most of its CPU. The output is the compact JSON SGLang's orjson writes."""

    __slots__ = ("_head", "_job", "_tail", "count", "ids", "text")

    def __init__(self, job: Job, index: int | None) -> None:
        self.text = bytearray()  # the cumulative text, JSON-escaped (no quotes)
        self.ids = bytearray()  # the cumulative output ids, comma-separated
        self.count = 0
        self._job = job  # its arrival, and its cached tokens once the engine matched them
        self._head = f',"meta_info":{{"id":{json_str(job.rid)},"finish_reason":'.encode()
        tail = "}}\n\n" if index is None else f'}},"index":{index}}}\n\n'
        self._tail = (
            f',"prompt_tokens":{job.prompt_len},"weight_version":"default",'
            '"total_retractions":0,"completion_tokens":%d,"cached_tokens":%d,"e2e_latency":%r'
            + tail
        ).encode()

    def add(self, token: Token) -> None:
        """Append a token."""
        self.text += token.text_json
        if self.count:
            self.ids += b","
        self.ids += token.id_json
        self.count += 1

    def event(self, finished: bool, now: float) -> bytes:
        """The SSE event of the output so far (text and ids cumulative, as SGLang streams)."""
        n = self.count
        reason = b'{"type":"length","length":%d}' % n if finished else b"null"
        job = self._job
        tail = self._tail % (n, job.cached_tokens, now - job.arrival)
        parts = (b'data: {"text":"', self.text, b'","output_ids":[', self.ids, b"]")
        return b"".join((*parts, self._head, reason, tail))


class NativeFormat:
    """The native ``/generate`` stream (a :class:`sglbench.sim.stream.StreamFormat`)."""

    def __init__(self, jobs: list[Job], batch: bool) -> None:
        """One cumulative state per job; batch events carry the prompt's ``index``."""
        self._chunks = [_Chunks(job, i if batch else None) for i, job in enumerate(jobs)]

    def add(self, index: int, token: Token) -> None:
        """Record a token."""
        self._chunks[index].add(token)

    def events(self, index: int, token: Token, now: float) -> tuple[bytes, ...]:
        """The cumulative event of job ``index``."""
        return (self._chunks[index].event(token.finished, now),)

    def error_event(self, failure: RequestError) -> bytes:
        """SGLang's in-stream error (its http_server's body, compact as orjson writes it)."""
        kind = "invalid_request_error" if failure.status < 500 else "server_error"
        error = {"message": str(failure), "type": kind, "code": failure.status,
                 "retryable": failure.status >= 500}  # fmt: skip
        text = json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))
        return f"data: {text}\n\n".encode()

    def error_response(self, failure: RequestError) -> web.Response:
        """SGLang's native error body."""
        return error_response(failure)

    def closing(self) -> tuple[bytes, ...]:
        """Nothing before ``[DONE]``."""
        return ()


async def _collect_generate(service: SimService, jobs: list[Job], batch: bool) -> web.Response:
    loop = asyncio.get_running_loop()
    try:
        states = await collect(service, jobs)
    except RequestError as exc:
        return error_response(exc)
    except EngineStopped as exc:
        return error_response(ServerFailure(str(exc)))
    now = loop.time()
    outs = [
        {"text": s.text, "output_ids": s.ids, "meta_info": _meta(j, len(s.ids), True, now)}
        for s, j in zip(states, jobs, strict=True)
    ]
    return web.json_response(outs if batch else outs[0])
