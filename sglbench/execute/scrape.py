"""Scrape Prometheus ``/metrics`` of workers and the router: parse, take deltas, sample gauges.

Parsing is ``prometheus_client``'s text parser (pinned 0.26.0), never by hand. Its pitfalls
(research note ``metrics.md``): counter families lose ``_total`` in their name but the samples
keep it; a single-process exporter adds ``*_created`` families (dropped here); asking SGLang for
OpenMetrics renames ``sglang:`` to ``sglang_``, so we send ``Accept: text/plain``; ``NaN``
happens; labels are compared as dicts (SGLang sorts them, the Rust routers do not); a series
absent before a point means 0 (SGLang creates a child at its first observation); a delta below
zero means the server restarted. A scrape that fails never raises: it is an error string.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sglbench.plan.observe import Endpoint
from sglbench.record.metrics import GAUGES, Series

SCRAPE_TIMEOUT_S = 5.0
# Labels that carry nothing across points (the model; the pid of multiprocess "all" gauges).
_DROPPED_LABELS = frozenset({"pid", "model_name"})
LabelKey = tuple[tuple[str, str], ...]
SampleKey = tuple[str, LabelKey]


@dataclass
class Scrape:
    """One parsed page: counter/histogram samples (no buckets) and the sampled gauges."""

    totals: dict[SampleKey, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def http_client() -> httpx.Client:
    """A client for scrapes: kept open, since building one (its TLS context) costs ~20 ms of CPU.

    trust_env=False: a proxy from the environment must not see traffic to our servers.
    """
    return httpx.Client(trust_env=False, headers={"Accept": "text/plain"})


def fetch(client: httpx.Client, url: str,
          timeout_s: float = SCRAPE_TIMEOUT_S) -> tuple[str | None, str | None]:
    """(text, None) or (None, what went wrong) for ``GET url/metrics``."""
    try:
        response = client.get(f"{url}/metrics", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return None, f"no answer at {url}/metrics ({type(exc).__name__})"
    if response.status_code != 200:
        return None, f"{url}/metrics answered {response.status_code}"
    return response.text, None


def _labels(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in _DROPPED_LABELS))


def _add_gauge(gauges: dict[str, float], name: str, value: float) -> None:
    if math.isnan(value):
        return
    old = gauges.get(name)
    if old is None:
        gauges[name] = value
    else:
        gauges[name] = max(old, value) if GAUGES[name] == "max" else old + value


def parse(text: str) -> Scrape:
    """Parse one page; a malformed page gives a ``Scrape`` with its error."""
    scrape = Scrape()
    try:
        for family in text_string_to_metric_families(text):
            kind = family.type
            for sample in family.samples:
                name = sample.name
                if name.endswith(("_created", "_bucket", "_gsum", "_gcount")):
                    continue
                if kind == "gauge" and family.name in GAUGES:
                    _add_gauge(scrape.gauges, family.name, float(sample.value))
                elif kind in ("counter", "histogram") or (kind == "unknown"
                                                          and name.endswith("_total")):
                    key = (name, _labels(sample.labels))
                    scrape.totals[key] = scrape.totals.get(key, 0.0) + float(sample.value)
    except ValueError as exc:  # the parser's word for a malformed line
        return Scrape(error=f"unparsable metrics ({exc})")
    return scrape


def gauge_lines(text: str) -> str:
    """Only the lines of the sampled gauges (the sampler parses these, not the whole page)."""
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in GAUGES:
            keep.append(line)
    return "\n".join(keep) + "\n"


def scrape(client: httpx.Client, endpoint: Endpoint) -> Scrape:
    """Fetch and parse one endpoint's page."""
    text, error = fetch(client, endpoint.url)
    return Scrape(error=error) if text is None else parse(text)


def deltas(before: Scrape, after: Scrape) -> tuple[list[Series], str | None]:
    """The non-zero deltas ``after - before``, or an error when a counter went down."""
    out: list[Series] = []
    for key in sorted(set(before.totals) | set(after.totals)):
        delta = after.totals.get(key, 0.0) - before.totals.get(key, 0.0)
        if delta < 0:
            return [], f"{key[0]} went down by {-delta:g}: the server restarted during the point"
        if delta > 0:
            out.append(Series(name=key[0], labels=dict(key[1]), delta=round(delta, 9)))
    return out, None


class GaugeSampler:
    """A background thread sampling the gauges of ``endpoints`` every ``interval_s`` seconds.

    Runs in the harness process, not in the client's, so it competes with the load generator
    only for the host's CPU (``benchmarks/scrape_overhead.py`` measures that).
    """

    def __init__(self, endpoints: Sequence[Endpoint], interval_s: float) -> None:
        self._endpoints = [e for e in endpoints if e.role != "router"]
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gauge-sampler", daemon=True)
        self._client = http_client()  # built here, before the window: ~37 ms of CPU
        self.start_time = 0.0
        self.cpu_s = 0.0  # CPU seconds the sampling thread used (its own cost, measured)
        self.series: dict[str, dict[str, list[tuple[float, float]]]] = {
            e.name: {} for e in self._endpoints}

    def start(self) -> None:
        """Start sampling at once (the first sample is taken now)."""
        self.start_time = time.perf_counter()
        self._thread.start()

    def stop(self) -> int:
        """Stop and wait for the thread; return how many samples were taken."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=SCRAPE_TIMEOUT_S + self._interval)
        return sum(len(v) for s in self.series.values() for v in s.values())

    def _run(self) -> None:
        started = time.thread_time()
        try:
            self._sample()
        finally:
            self.cpu_s = time.thread_time() - started

    def _sample(self) -> None:
        with self._client as client:
            while True:
                for endpoint in self._endpoints:
                    text, _ = fetch(client, endpoint.url, timeout_s=min(2.0, self._interval * 2))
                    if text is None:
                        continue  # a missed sample; the before/after scrapes record failures
                    at = round(time.perf_counter() - self.start_time, 3)
                    for name, value in parse(gauge_lines(text)).gauges.items():
                        self.series[endpoint.name].setdefault(name, []).append((at, value))
                if self._stop.wait(self._interval):
                    return
