"""The simulator's HTTP server (aiohttp, one event loop): the application and its lifecycle.

The routes live in :mod:`sglbench.sim.native_api` (SGLang's native API) and
:mod:`sglbench.sim.openai_api` (``/v1``); both stream through :mod:`sglbench.sim.stream`. This
module builds the engine, tokenizer and service from :class:`~sglbench.sim.config.SimArgs`,
listens on the port (and, for a prefill server, the bootstrap port), turns ready after
``--sim-startup-delay``, and stops on SIGINT/SIGTERM or ``--sim-fail-after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from sglbench.errors import ConfigError
from sglbench.sim import info, native_api, openai_api
from sglbench.sim.bootstrap import bootstrap_app
from sglbench.sim.config import SimArgs
from sglbench.sim.engine import Engine, EngineConfig
from sglbench.sim.profiles import load_profile
from sglbench.sim.resources import PeerGpu
from sglbench.sim.service import SimService
from sglbench.sim.telemetry import Telemetry
from sglbench.sim.tokenizer import load_tokenizer

log = logging.getLogger("sglbench.sim")


def build_app(service: SimService) -> web.Application:
    """The aiohttp application with every SGLang route the simulator answers."""
    app = web.Application(client_max_size=64 * 1024**2)
    native_api.add_routes(app, service)
    openai_api.add_routes(app, service)
    return app


def build_service(args: SimArgs) -> SimService:
    """Profile, engine and tokenizer from the arguments (ConfigError on a bad one)."""
    chunk = args.chunked_prefill_size
    telemetry = Telemetry(args.disaggregation_mode, args.model_name)  # what /metrics shows
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
        telemetry=telemetry,
    )
    engine = Engine(config)
    tokenizer = load_tokenizer(args.model_path, args.tokenizer_path, args.sim_tokenizer_cache)
    log.info("tokenizer: %s", tokenizer.description)
    return SimService(args, engine, tokenizer, telemetry)


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
