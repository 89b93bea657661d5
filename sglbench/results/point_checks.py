"""Sanity checks on what was observed around each point: cache, client schedule, KV transfer.

Thresholds, each stated where it is used in the message:

* ``warm_cache``: the flush before the point was asked (BENCH_FLUSH_CACHE) but not done on
  every worker; or a dataset without shared prefixes (random, random-ids) shows more than
  ``WARM_HIT_RATE`` of its prompt tokens as cache hits (a repeat sends the same prompts as an
  earlier point: an unflushed cache answers them from memory).
* ``client_late``: the client sent its last request more than ``LATE_OVERRUN`` later than its
  schedule (it offered less load than asked), or its median request left more than
  ``LATE_GAPS`` mean inter-arrival gaps late (the arrivals were not the process asked for).
* ``kv_failures``: any bootstrap or KV-transfer failure on a PD worker (or smg's counters).
* ``metrics_missing``: a scrape failed or a counter went down (a server restarted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sglbench.display import as_number

WARM_HIT_RATE = 0.2
LATE_OVERRUN = 0.05
LATE_GAPS = 1.0


def _number(value: Any) -> float | None:
    found = as_number(value)
    return None if found is None or math.isnan(found) else found


def warm_cache_message(row: Mapping[str, Any]) -> str | None:
    """Why the point ran on a warm cache, or None."""
    if row.get("cache_flushed") is False:
        failed = row.get("flush_failed") or "some workers"
        return (f"the radix cache was not flushed before this point ({failed} did not answer "
                "200 to /flush_cache): it ran on a warm cache")
    hit = _number(row.get("prefix_hit_rate"))
    dataset = str(row.get("dataset") or "")
    if hit is not None and dataset.startswith("random") and hit > WARM_HIT_RATE:
        return (f"{hit:.0%} of prompt tokens were prefix-cache hits on a dataset without shared "
                f"prefixes (over {WARM_HIT_RATE:.0%}): the cache was warm, e.g. a repeat "
                "answered from an earlier point's cache")
    return None


def client_late_message(row: Mapping[str, Any]) -> str | None:
    """Why the client's schedule slipped enough to bias the point, or None."""
    if row.get("late_arrivals") in (None, "all at once"):
        return None
    overrun = _number(row.get("late_overrun")) or 0.0
    median = _number(row.get("late_median_ms")) or 0.0
    gap = _number(row.get("late_gap_ms")) or 0.0
    if overrun > LATE_OVERRUN:
        return (f"the client sent its last request {overrun:.0%} after its {row['late_arrivals']} "
                f"schedule ended (over {LATE_OVERRUN:.0%}): it offered less load than asked, "
                "so throughput and latency belong to a lower rate")
    if gap > 0 and median > LATE_GAPS * gap:
        return (f"half the requests left more than {median:.0f} ms late, over {LATE_GAPS:g} mean "
                f"inter-arrival gap ({gap:.0f} ms): the arrivals were not the "
                f"{row['late_arrivals']} process asked for")
    return None


def kv_failure_message(row: Mapping[str, Any]) -> str | None:
    """The point's bootstrap and transfer failures, or None."""
    boot = _number(row.get("kv_bootstrap_failed")) or 0.0
    moved = _number(row.get("kv_transfer_failed")) or 0.0
    if boot <= 0 and moved <= 0:
        return None
    return (f"{boot:g} bootstrap and {moved:g} KV-transfer failure(s) on the PD workers during "
            "this point (server-side counters): those requests failed or were retried; check "
            "the transfer backend and the prefill/decode logs")


def metrics_message(row: Mapping[str, Any]) -> str | None:
    """A failed scrape or restart, or None."""
    error = row.get("metrics_error")
    if not isinstance(error, str) or not error:
        return None
    return f"server metrics incomplete for this point ({error}); the breakdown leaves it out"
