"""The simulator's HTTP server (aiohttp, one event loop): SGLang's native API and its lifecycle.

Native endpoints here; OpenAI ones in :mod:`sglbench.sim.openai_api`; server/model info in
:mod:`sglbench.sim.info`. A streamed ``/generate`` answers SGLang's SSE: one
``data: {"text": <cumulative>, "output_ids": [<cumulative>], "meta_info": {...}}`` per token,
written as soon as the engine's deadline for that token has passed (a stream that fell behind
sends only its newest state, see :func:`sglbench.sim.protocol.held_back`), ``finish_reason``
only on the last one, then ``data: [DONE]``. Response headers go out with the first token, so
a request the engine refuses still gets a proper HTTP 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sglbench.errors import ConfigError
from sglbench.sim import info, openai_api
from sglbench.sim.bootstrap import bootstrap_app
from sglbench.sim.cli import SimArgs
from sglbench.sim.engine import Engine, EngineConfig, EngineStopped
from sglbench.sim.metrics import render_metrics
from sglbench.sim.profiles import load_profile
from sglbench.sim.protocol import (
    DEFAULT_MAX_NEW_TOKENS,
    SSE_HEADERS,
    TextState,
    UserError,
    as_object,
    check_sampling,
    collect,
    finish_reason,
    held_back,
    int_field,
    make_jobs,
    merged,
    prompt_lengths,
)
from sglbench.sim.resources import PeerGpu
from sglbench.sim.service import BadRequest, Job, NotReady, ServerFailure, SimService
from sglbench.sim.tokenizer import load_tokenizer

log = logging.getLogger("sglbench.sim")
SERVICE = web.AppKey("service", SimService)


def error_response(exc: BadRequest | NotReady | ServerFailure) -> web.Response:
    """SGLang's native error body: ``{"error": {"message": ...}}``."""
    return web.json_response({"error": {"message": str(exc)}}, status=exc.status)


async def read_json(request: web.Request) -> Any:
    """The parsed body, or BadRequest naming the JSON problem."""
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc


def _service(request: web.Request) -> SimService:
    return request.app[SERVICE]


async def health(request: web.Request) -> web.Response:
    """``/health`` and ``/health_generate``: 503 while starting, 200 when ready."""
    return web.Response(status=200 if _service(request).ready else 503)


async def model_info(request: web.Request) -> web.Response:
    """``/model_info`` and ``/get_model_info``."""
    return web.json_response(info.model_info(_service(request).args))


async def server_info(request: web.Request) -> web.Response:
    """``/server_info`` and ``/get_server_info``: server args + internal state, marked simulated."""
    service = _service(request)
    return web.json_response(info.server_info(service.args, service.engine))


async def flush_cache(request: web.Request) -> web.Response:
    """``/flush_cache``: the simulator keeps no prefix cache, so this always succeeds."""
    try:
        timeout = float(request.query.get("timeout", "0"))
    except ValueError:
        timeout = -1.0
    if timeout < 0:
        return web.Response(status=400, text="timeout must be a number >= 0\n")
    return web.Response(text="Cache flushed.\n")


async def metrics(request: web.Request) -> web.Response:
    """``/metrics``: Prometheus text in SGLang's names."""
    service = _service(request)
    text = render_metrics(
        service.engine.stats(), service.args.model_name, service.args.disaggregation_mode
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /generate``: SGLang's native generation, streamed or not, single or batch."""
    service = _service(request)
    try:
        body = as_object(await read_json(request))
        jobs, batch, stream = _parse_generate(service, body)
    except BadRequest as exc:
        return error_response(exc)
    try:
        if stream:
            return await _stream_generate(request, service, jobs, batch)
        return await _collect_generate(service, jobs, batch)
    finally:
        for job in jobs:
            service.finished(job)


def _parse_generate(service: SimService, body: dict[str, Any]) -> tuple[list[Job], bool, bool]:
    """Jobs, batch flag and stream flag of a native request."""
    if body.get("text") is not None:
        lengths, batch = prompt_lengths(service, body["text"], "text")
    elif body.get("input_ids") is not None:
        lengths, batch = prompt_lengths(service, body["input_ids"], "input_ids")
    else:
        raise BadRequest("Either text, input_ids or input_embeds should be provided.")
    params = body.get("sampling_params") or {}
    per_prompt = params if isinstance(params, list) else [params] * len(lengths)
    if len(per_prompt) != len(lengths) or not all(isinstance(p, dict) for p in per_prompt):
        raise BadRequest("sampling_params must be an object (or one object per prompt)")
    for p in per_prompt:
        check_sampling(p)
    max_new = [int_field(p, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS, 0) for p in per_prompt]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"stream must be true or false, got {stream!r}")
    return make_jobs(service, body, lengths, max_new), batch, stream


def _meta(job: Job, completion: int, finished: bool, now: float) -> dict[str, Any]:
    return {
        "id": job.rid,
        "finish_reason": finish_reason(completion) if finished else None,
        "prompt_tokens": job.prompt_len,
        "weight_version": "default",
        "total_retractions": 0,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "e2e_latency": now - job.arrival,
    }


class _NativeChunks:
    """SSE events of one streamed job, formatted by hand: at hundreds of streams the server
    writes tens of thousands of events a second, and ``json.dumps`` per event would be most of
    its CPU. The output is the compact JSON SGLang's orjson writes."""

    def __init__(self, job: Job, index: int | None) -> None:
        self.state = TextState()
        self._job = job
        rid = json.dumps(job.rid)
        self._head = f'"meta_info":{{"id":{rid},"finish_reason":'
        self._mid = (
            f',"prompt_tokens":{job.prompt_len},"weight_version":"default",'
            '"total_retractions":0,"completion_tokens":'
        )
        self._tail = "}}\n\n" if index is None else f'}},"index":{index}}}\n\n'

    def event(self, finished: bool, now: float) -> bytes:
        """The SSE event of the output so far (text and ids cumulative, as SGLang streams)."""
        s = self.state
        n = len(s.ids)
        reason = f'{{"type":"length","length":{n}}}' if finished else "null"
        e2e = now - self._job.arrival
        return (
            f'data: {{"text":"{s.text_json}","output_ids":[{s.ids_json}],{self._head}{reason}'
            f'{self._mid}{n},"cached_tokens":0,"e2e_latency":{e2e!r}{self._tail}'
        ).encode()


async def _stream_generate(
    request: web.Request, service: SimService, jobs: list[Job], batch: bool
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    resp = web.StreamResponse(headers=SSE_HEADERS)
    chunks = [_NativeChunks(job, i if batch else None) for i, job in enumerate(jobs)]
    interval = service.args.stream_interval
    try:
        async with contextlib.aclosing(merged(service, jobs)) as tokens:
            async for i, token in tokens:
                chunk, job = chunks[i], jobs[i]
                chunk.state.add(token)
                if held_back(token, interval):
                    job.coalesced += token.more_due
                    continue
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write(chunk.event(token.finished, loop.time()))
                job.sent.append(loop.time())
                job.deadlines.append(token.deadline)
    except (*UserError, EngineStopped) as exc:
        failure = exc if isinstance(exc, UserError) else ServerFailure(str(exc))
        if not resp.prepared:
            return error_response(failure)
        error = {"error": {"message": str(exc), "code": failure.status}}
        await resp.write(f"data: {json.dumps(error)}\n\n".encode())
    except ConnectionResetError:
        return resp  # the client went away; closing the stream aborted the request
    if not resp.prepared:
        await resp.prepare(request)  # max_new_tokens 0: no token, still a valid stream
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _collect_generate(service: SimService, jobs: list[Job], batch: bool) -> web.Response:
    loop = asyncio.get_running_loop()
    try:
        states = await collect(service, jobs)
    except UserError as exc:
        return error_response(exc)
    except EngineStopped as exc:
        return error_response(ServerFailure(str(exc)))
    now = loop.time()
    outs = [
        {"text": s.text, "output_ids": s.ids, "meta_info": _meta(j, len(s.ids), True, now)}
        for s, j in zip(states, jobs, strict=True)
    ]
    return web.json_response(outs if batch else outs[0])


def build_app(service: SimService) -> web.Application:
    """The aiohttp application with every SGLang route the simulator answers."""
    app = web.Application(client_max_size=64 * 1024**2)
    app[SERVICE] = service
    add = app.router.add_route
    for path in ("/health", "/health_generate"):
        add("GET", path, health)
    for path in ("/model_info", "/get_model_info"):
        add("GET", path, model_info)
    for path in ("/server_info", "/get_server_info"):
        add("GET", path, server_info)
    for method in ("GET", "POST"):
        add(method, "/flush_cache", flush_cache)
    add("GET", "/metrics", metrics)
    for method in ("POST", "PUT"):
        add(method, "/generate", generate)
    openai_api.add_routes(app, service)
    return app


def build_service(args: SimArgs) -> SimService:
    """Profile, engine and tokenizer from the arguments (ConfigError on a bad one)."""
    chunk = args.chunked_prefill_size
    config = EngineConfig(
        role=args.disaggregation_mode,
        profile=load_profile(args.sim_profile),
        tp_size=args.tp_size,
        mem_fraction_static=args.mem_fraction_static,
        max_running_requests=args.max_running_requests,
        max_total_tokens=args.max_total_tokens,
        chunked_prefill_size=chunk,
        seed=args.sim_seed,
        time_scale=args.sim_time_scale,
        step_overhead_ms=args.sim_step_overhead_ms,
        gpu=PeerGpu(args.sim_shared_gpu) if args.sim_shared_gpu else None,
    )
    engine = Engine(config)
    tokenizer = load_tokenizer(args.model_path, args.tokenizer_path, args.sim_tokenizer_cache)
    log.info("tokenizer: %s", tokenizer.description)
    return SimService(args, engine, tokenizer)


async def _listen(runner: web.BaseRunner, host: str, port: int, flag: str) -> None:
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        raise ConfigError(
            f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror or exc});"
            " is another server using it? pick a free port"
        ) from exc


async def run_server(args: SimArgs, stopped: asyncio.Event | None = None) -> int:
    """Serve until ``stopped`` is set or a signal arrives; the exit status.

    Raises:
        ConfigError: bad profile/tokenizer, or a port that cannot be bound.
    """
    service = build_service(args)
    stop = stopped or asyncio.Event()
    status = 0

    def fail_after() -> None:
        nonlocal status
        status = 1
        stop.set()

    service.on_fail_after = fail_after
    runners: list[web.AppRunner] = []
    try:
        runners.append(await _start_runner(build_app(service)))
        await _listen(runners[0], args.host, args.port, "--port")
        if service.rooms is not None:
            runners.append(await _start_runner(bootstrap_app(service.rooms)))
            await _listen(
                runners[1],
                args.host,
                args.disaggregation_bootstrap_port,
                "--disaggregation-bootstrap-port",
            )
        await service.start()
        _on_signals(stop.set)
        log.info(info.startup_line(args, service.engine))
        await _become_ready(service, args.sim_startup_delay, stop)
        await stop.wait()
    finally:
        if stop.is_set():
            log.info("stopping")
        await service.engine.stop()  # open streams end at once instead of holding shutdown
        for runner in reversed(runners):
            await runner.cleanup()
        await service.close()
    return status


async def _start_runner(app: web.Application) -> web.AppRunner:
    # No access log: one line per request would cost more than the simulated work itself.
    # Handler cancellation: a client that goes away aborts its request, as in SGLang.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
    await runner.setup()
    return runner


async def _become_ready(service: SimService, delay: float, stop: asyncio.Event) -> None:
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    service.ready = True
    log.info("ready: /health_generate answers 200")


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, callback)


def serve(args: SimArgs) -> int:
    """Run the server on a fresh event loop until it stops; the exit status.

    uvloop (SGLang's own event loop) is used when installed: it roughly halves the CPU the
    server spends per streamed token, which is what keeps deliveries on time at hundreds of
    streams on a small machine.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_server(args))
    return uvloop.run(run_server(args))
