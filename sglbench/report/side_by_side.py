"""Run independent jobs (drawing and saving one figure each) on all the machine's cores.

matplotlib draws in one thread under the GIL, and a figure with tens of labels takes about a
second to draw, so ``invoke plot`` and ``invoke report`` draw their figures in forked copies of
this process: the imports and the data are already there (nothing is imported again, nothing is
pickled), each copy writes its own files and exits. Where ``os.fork`` is missing, only one core
is usable or other threads run (a fork copies only the calling thread, and with it any lock
another thread held), the jobs simply run one after the other here.

Errors: a job that fails in a copy is run again here, so its exception (a full disk, a
directory that cannot be written) is raised exactly as if it had run here.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

Job = Callable[[], object]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_side_by_side(jobs: Sequence[Job]) -> None:
    """Run every job once, spread over the usable cores; return when all are done.

    The jobs are dealt round-robin into one group per core (at most one per job); this process
    runs the first group, a forked copy each of the others.

    Raises:
        Exception: whatever a failing job raises (the first such job, in order).
    """
    groups = min(len(jobs), usable_cores())
    if groups < 2 or not hasattr(os, "fork") or threading.active_count() > 1:
        for job in jobs:
            job()
        return
    sys.stdout.flush()  # a copy must not write out what this process had buffered
    sys.stderr.flush()
    # As the gc module's documentation advises before a fork without exec: the copies' GC then
    # leaves the objects they inherit alone, instead of copying their memory pages to mark them.
    frozen = gc.get_freeze_count()
    gc.freeze()
    children: dict[int, list[Job]] = {}
    failed: list[Job] = []
    try:
        for group in range(1, groups):
            share = list(jobs[group::groups])
            pid = os.fork()
            if pid == 0:
                _child(share)
            children[pid] = share
        for job in jobs[0::groups]:
            job()
    except BaseException:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        raise
    finally:
        for pid, share in children.items():
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed += share
        if not frozen:
            gc.unfreeze()
    for job in failed:
        job()


def _child(share: Sequence[Job]) -> None:
    """In a forked copy: run ``share`` and exit (0: all done) without any of the parent's
    exit handlers or buffered output."""
    code = 1
    try:
        for job in share:
            job()
        code = 0
    except BaseException:  # the parent runs the share again and raises the error itself
        pass
    finally:
        os._exit(code)
