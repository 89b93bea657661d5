"""Log files of the processes we start: their last lines, for error messages.

A leaf (standard library only): the bench client worker imports it before SGLang's client, so
nothing here may pull in settings, pydantic or the runtimes.
"""

from __future__ import annotations

import os
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
