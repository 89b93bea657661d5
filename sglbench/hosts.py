"""Which host names mean this machine (loopback), for port-clash checks and local runtimes."""

from __future__ import annotations

_LOOPBACK_NAMES = frozenset({"localhost", "::1"})


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``::1`` and every ``127.*`` address."""
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def same_machine(host: str) -> str:
    """One name for every loopback spelling, so two listeners on it are seen to clash."""
    return "127.0.0.1" if is_loopback(host) else host
