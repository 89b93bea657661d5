"""HTTP GETs to our servers and the router: never through a proxy, never raising for "not yet"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    """One readiness check: did it pass, and what to show (``503``, ``connection refused``)."""

    ok: bool
    status: str


@dataclass(frozen=True)
class Answer:
    """What one GET got: the status and JSON body, or why nothing answered."""

    status: int | None  # None: nothing answered
    body: Any = None  # the JSON body; None when it is not JSON
    error: str = ""  # why nothing answered: ``connection refused``, ``timed out``, ...


def http_get(url: str, *, timeout_s: float = 10.0) -> Answer:
    """GET ``url``, never through a proxy. Never raises for network errors (they mean "not yet")."""
    # httpx takes a few tenths of a second to import: only the tasks that probe pay for it.
    import httpx

    try:
        # trust_env=False: a proxy from the environment must not see traffic to our servers.
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    except httpx.ConnectError:
        return Answer(None, error="connection refused")
    except httpx.TimeoutException:
        return Answer(None, error="timed out")
    except httpx.HTTPError as exc:
        return Answer(None, error=type(exc).__name__)
    try:
        body = response.json()
    except ValueError:
        body = None
    return Answer(response.status_code, body)


def http_probe(url: str, *, timeout_s: float = 10.0) -> Probe:
    """GET ``url``: ok on 200. Never raises for network errors (they mean "not yet")."""
    answer = http_get(url, timeout_s=timeout_s)
    if answer.status is None:
        return Probe(False, answer.error)
    return Probe(answer.status == 200, str(answer.status))
