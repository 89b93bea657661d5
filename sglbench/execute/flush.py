"""Flush the radix (prefix) cache of every worker: ``POST /flush_cache`` on each URL.

SGLang flushes only when the worker is idle; ``?timeout=S`` makes it wait up to S seconds for
running requests (the bench client's own flush passes 60). The answer of each worker is kept:
a point measured after a failed flush runs on a warm cache, which the report flags.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx

from sglbench.plan.observe import Endpoint
from sglbench.record.observation import CacheFlush, FlushWhen, WorkerFlush
from sglbench.record.schema import now

# As SGLang's bench client: wait up to 60 s for running requests to finish.
FLUSH_TIMEOUT_S = 60.0


def flush_one(endpoint: Endpoint, timeout_s: float = FLUSH_TIMEOUT_S) -> WorkerFlush:
    """Flush one worker; never raises (a failure is in the result)."""
    started = time.monotonic()
    try:
        # trust_env=False: a proxy from the environment must not see traffic to our servers.
        response = httpx.post(f"{endpoint.url}/flush_cache", params={"timeout": timeout_s},
                              timeout=timeout_s + 10.0, trust_env=False)  # fmt: skip
    except httpx.HTTPError as exc:
        return WorkerFlush(name=endpoint.name, url=endpoint.url, ok=False,
                           seconds=round(time.monotonic() - started, 3),
                           message=f"no answer ({type(exc).__name__})")  # fmt: skip
    text = response.text.strip().splitlines()
    return WorkerFlush(name=endpoint.name, url=endpoint.url, ok=response.status_code == 200,
                       status=response.status_code, seconds=round(time.monotonic() - started, 3),
                       message=(text[0] if text else "")[:200])  # fmt: skip


def flush_workers(workers: Sequence[Endpoint], when: FlushWhen) -> CacheFlush:
    """Flush each worker in turn; ``done`` only when every one answered 200."""
    at = now()
    results = [flush_one(worker) for worker in workers]
    return CacheFlush(done=bool(results) and all(r.ok for r in results), when=when, at=at,
                      workers=results)  # fmt: skip
