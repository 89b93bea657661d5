"""sglang-benchmark: aggregated vs prefill/decode-disaggregated SGLang serving, measured.

Pipeline (one direction): settings -> specs (pure builders) -> execution (runtime, router,
readiness, bench) -> results -> report. ``sglbench.sim`` is an SGLang-compatible simulator.
"""

__version__ = "0.1.0"
