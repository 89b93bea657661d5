"""Log files of the processes we start: their last lines (for error messages), or followed.

A leaf (standard library only): the bench client worker imports it before SGLang's client, so
nothing here may pull in settings, pydantic or the runtimes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` non-empty lines of a log file ('' if it does not exist).

    Only the last 64 KiB are read (logs grow large); carriage returns count as line ends, so a
    progress bar redrawn in place shows as its last state, not as one huge line.
    """
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [ln.rstrip() for ln in data.replace("\r", "\n").splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def log_file_lines(path: Path, *, follow: bool, ended: Callable[[], bool],
                   poll_s: float = 0.1) -> Iterator[str]:
    """The lines of ``path`` (none when it does not exist); with ``follow``, keep reading until
    ``ended()`` says its writer has stopped, then read once more (its last words)."""
    if not path.is_file():
        return
    with path.open("r", errors="replace") as log:
        while True:
            line = log.readline()
            if line:
                yield line.rstrip("\n")
                continue
            if not follow or ended():
                # One last read: lines written between our last read and its exit.
                yield from (rest.rstrip("\n") for rest in log.readlines())
                return
            time.sleep(poll_s)
