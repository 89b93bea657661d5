"""Physical step-time model of one SGLang forward pass (pure functions, no state).

Modelling choices:

* A forward pass is a roofline: ``max(bytes moved / (HBM bandwidth * bandwidth_eff),
  FLOPs / (bf16 peak * compute_eff))`` plus fixed overheads. Bytes are the weights (read once
  per pass, whatever the batch), the KV cache read by attention and the KV written for new
  tokens. FLOPs are ``2 * params * tokens`` for the dense layers (in prefill, the LM head only
  for the last token of each request) plus ``4 * layers * heads * head_dim`` per (query token,
  key token) pair for attention.
* Decode and prefill are separate passes. SGLang's default scheduler (no ``--enable-mixed-chunk``)
  runs a prefill (extend) batch and the decode batch in consecutive iterations, so a step that has
  both costs the sum: this is exactly the prefill/decode interference that aggregated serving
  suffers and disaggregation removes.
* Decode runs in CUDA graphs up to ``cuda_graph_max_bs`` requests (SGLang's default by GPU
  memory, ``arg_groups/memory_hook.py`` ``handle_gpu_memory_settings``: 256 for 60-160 GiB GPUs
  such as A100-80GB, H100, GH200 at TP < 4, 512 at TP >= 4); a graph's fixed cost is small
  (``step_overhead_ms``, plus a little per running request). Above the limit the decode forward
  runs eagerly and pays the kernel launches (``eager_overhead_ms``). Prefill always runs eagerly;
  on a 3B model the launches dominate, hence a large ``prefill_overhead_ms``.
* A pass is split into GPU-busy time (the roofline and, for a graph, its fixed cost: what a
  second server on the same GPU contends for, :class:`sglbench.sim.resources.SharedGpu`) and
  host time (eager kernel launches: the GPU idles meanwhile).
* The scheduler's CPU work per iteration (``sched_overhead_ms`` plus ``sched_per_req_us`` per
  running request: batch bookkeeping, sampling post-processing, stop checks, streaming to the
  detokenizer) overlaps the GPU pass with SGLang's default overlap scheduler
  (``scheduler.py`` ``event_loop_overlap``): a decode step takes ``max(pass, CPU)``, so the CPU
  only shows once a large batch makes it the longer of the two.
* Tensor parallelism divides bytes and FLOPs by ``tp`` and adds two all-reduces per layer.
* KV capacity is what SGLang reports: ``memory * mem_fraction - weights - reserved`` divided by
  the KV bytes per token; KV heads are replicated when ``tp`` exceeds them.
* A KV transfer (PD) alone costs ``kv bytes / link bandwidth + kv_transfer_latency_ms``;
  concurrent transfers share the link (:class:`sglbench.sim.resources.KvLink`).

All durations are seconds of modelled GPU time; the engine scales them by ``--sim-time-scale``.

What the model (this file, :mod:`~sglbench.sim.engine`, :mod:`~sglbench.sim.batching`,
:mod:`~sglbench.sim.resources`) captures, and what it does not:

* Captured: weight/KV/FLOP rooflines per pass; continuous batching with SGLang's FCFS admission,
  prefill-first scheduling, chunked prefill, ``max_prefill_tokens``, ``max_running_requests``,
  KV capacity from memory, ``new_token_ratio`` admission and decode retraction with recompute;
  the CUDA-graph batch limit; the scheduler's CPU per running request, overlapped with the GPU;
  the tokenizer process handing requests over one at a time; two servers time-slicing one GPU;
  KV transfers sharing one path; TP as divided work plus all-reduces.
* Fitted, not derived: the fixed costs (graph step, eager prefill, per-request), compute
  efficiency, request latency, transfer latency and link bandwidth of the path the runs had.
* Priors the reference runs cannot fit (they stop at 128 running requests): the scheduler's
  per-request CPU (``sched_per_req_us``), eager decode above the graph limit, bandwidth
  efficiency on a GPU seen only with short contexts. Predictions past 128-256 running requests
  lean on them; check such a prediction against one measured point before trusting it.
* Not modelled: radix (prefix) cache hits (random prompts have none), speculative decoding,
  MoE/expert parallelism, pipeline parallelism, data-parallel attention, network congestion
  between nodes beyond the KV path, the bench client's and router's own CPU time (a few ms of
  TTFT per request; more through the Python mini-lb, which the reference PD runs used), EOS
  before ``max_new_tokens``, hardware variance between runs (two real runs of one point differ
  by a few percent; a real run's hiccups, like one 600 ms TTFT, are not reproduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sglbench.sim.profiles import Profile

_GIB = 1024**3


def kv_bytes_per_token(profile: Profile) -> int:
    """KV-cache bytes of one token over all layers: K and V, every KV head (unsharded)."""
    m = profile.model
    return 2 * m.layers * m.kv_heads * m.head_dim * m.dtype_bytes


def kv_bytes(profile: Profile, tokens: int) -> int:
    """KV-cache bytes of ``tokens`` tokens (what a PD transfer moves)."""
    return tokens * kv_bytes_per_token(profile)


def weight_bytes(profile: Profile) -> float:
    """Bytes of the model weights."""
    return profile.model.params_B * 1e9 * profile.model.dtype_bytes


def kv_transfer_time(profile: Profile, tokens: int) -> float:
    """Seconds to move ``tokens`` tokens of KV from a prefill to a decode server."""
    link = profile.gpu.link_bandwidth_GBps * 1e9
    return kv_bytes(profile, tokens) / link + profile.efficiency.kv_transfer_latency_ms / 1e3


def kv_capacity_tokens(profile: Profile, tp: int, mem_fraction: float) -> int:
    """KV-cache capacity in tokens (SGLang's ``max_total_num_tokens``); 0 if nothing is left.

    Args:
        profile: GPU and model.
        tp: Tensor-parallel size (GPUs per server).
        mem_fraction: ``--mem-fraction-static``.
    """
    m = profile.model
    per_gpu_gib = (
        profile.gpu.memory_GB * mem_fraction
        - weight_bytes(profile) / tp / _GIB
        - profile.efficiency.reserved_memory_GB
    )
    kv_heads_per_gpu = math.ceil(m.kv_heads / tp)
    per_token_per_gpu = 2 * m.layers * kv_heads_per_gpu * m.head_dim * m.dtype_bytes
    return max(0, int(per_gpu_gib * _GIB // per_token_per_gpu))


def _roofline(profile: Profile, tp: int, bytes_moved: float, flops: float) -> float:
    """Seconds of a pass limited by either memory traffic or compute."""
    eff = profile.efficiency
    bw = profile.gpu.hbm_bandwidth_GBps * 1e9 * eff.bandwidth_eff
    peak = profile.gpu.bf16_tflops * 1e12 * eff.compute_eff
    seconds = max(bytes_moved / tp / bw, flops / tp / peak)
    if tp > 1:
        seconds += 2 * profile.model.layers * eff.tp_allreduce_us / 1e6
    return seconds


def _attention_flops(profile: Profile, pairs: float) -> float:
    m = profile.model
    return 4.0 * m.layers * m.heads * m.head_dim * pairs


@dataclass(frozen=True)
class PassCost:
    """One forward pass: GPU-busy seconds, host seconds (GPU idle), scheduler CPU seconds.

    Alone on its GPU a pass takes ``host + gpu``; the scheduler's ``cpu`` overlaps it (see the
    module docstring), so a step lasts ``max(host + gpu, cpu)``.
    """

    gpu: float
    host: float = 0.0
    cpu: float = 0.0

    @property
    def alone(self) -> float:
        """Seconds of the step when nothing else uses the GPU."""
        return max(self.host + self.gpu, self.cpu)


def cuda_graph_max_bs(profile: Profile, tp: int) -> int:
    """SGLang's default ``cuda_graph_max_bs`` for this GPU (``handle_gpu_memory_settings``)."""
    gib = profile.gpu.memory_GB
    if gib < 20:
        return 8
    if gib < 60:
        return 48 if gib < 35 and tp < 4 else (32 if tp < 4 else 160)
    if gib < 160:
        return 256 if tp < 4 else 512
    return 512


def sched_cpu_seconds(profile: Profile, batch: int) -> float:
    """Scheduler CPU time of one iteration with ``batch`` running requests."""
    eff = profile.efficiency
    return (eff.sched_overhead_ms + eff.sched_per_req_us * batch / 1e3) / 1e3


def decode_pass(
    profile: Profile, tp: int, batch: int, kv_tokens_read: int, graph_max_bs: int | None = None
) -> PassCost:
    """Cost of one decode pass of ``batch`` requests whose contexts hold ``kv_tokens_read``.

    Args:
        profile: GPU and model.
        tp: Tensor-parallel size.
        batch: Requests decoding one token each.
        kv_tokens_read: Sum of their context lengths.
        graph_max_bs: Largest batch run as a CUDA graph (default: SGLang's for the GPU).
    """
    if batch <= 0:
        return PassCost(0.0)
    per_tok = kv_bytes_per_token(profile)
    bytes_moved = weight_bytes(profile) + (kv_tokens_read + batch) * per_tok
    flops = 2.0 * profile.model.params_B * 1e9 * batch + _attention_flops(profile, kv_tokens_read)
    eff = profile.efficiency
    fixed = (eff.step_overhead_ms + eff.per_seq_overhead_ms * batch) / 1e3
    limit = cuda_graph_max_bs(profile, tp) if graph_max_bs is None else graph_max_bs
    host = eff.eager_overhead_ms / 1e3 if batch > limit else 0.0
    gpu = fixed + _roofline(profile, tp, bytes_moved, flops)
    return PassCost(gpu=gpu, host=host, cpu=sched_cpu_seconds(profile, batch))


def decode_time(profile: Profile, tp: int, batch: int, kv_tokens_read: int) -> float:
    """Seconds of one decode step of ``batch`` requests whose contexts hold ``kv_tokens_read``."""
    return decode_pass(profile, tp, batch, kv_tokens_read).alone


def prefill_time(
    profile: Profile,
    tp: int,
    tokens: int,
    requests: int = 1,
    prefix_tokens: int = 0,
    attention_pairs: float | None = None,
) -> float:
    """Seconds of one prefill (extend) pass.

    Args:
        profile: GPU and model.
        tp: Tensor-parallel size.
        tokens: New prompt tokens computed in this pass (all chunks together).
        requests: Requests these tokens belong to (each adds a small fixed cost).
        prefix_tokens: Tokens already in the KV cache that the chunks attend to (chunked prefill).
        attention_pairs: (query, key) pairs of attention; default assumes one request per chunk
            attending causally to its own tokens and its prefix.
    """
    return prefill_pass(profile, tp, tokens, requests, prefix_tokens, attention_pairs).alone


def prefill_pass(
    profile: Profile,
    tp: int,
    tokens: int,
    requests: int = 1,
    prefix_tokens: int = 0,
    attention_pairs: float | None = None,
) -> PassCost:
    """Cost of one prefill (extend) pass; arguments as :func:`prefill_time`."""
    if tokens <= 0:
        return PassCost(0.0)
    if attention_pairs is None:
        attention_pairs = tokens * (prefix_tokens + tokens / 2.0) / max(1, requests)
    per_tok = kv_bytes_per_token(profile)
    bytes_moved = weight_bytes(profile) + (prefix_tokens + tokens) * per_tok
    m = profile.model
    # Prefill computes logits for the last token of each request only, so the (tied) embedding
    # matrix counts once per request, the rest of the weights once per token.
    embedding = m.vocab * m.hidden
    dense = m.params_B * 1e9 - embedding
    flops = (
        2.0 * dense * tokens
        + 2.0 * embedding * requests
        + _attention_flops(profile, attention_pairs)
    )
    eff = profile.efficiency
    host = (eff.prefill_overhead_ms + eff.per_prefill_req_overhead_ms * requests) / 1e3
    return PassCost(gpu=_roofline(profile, tp, bytes_moved, flops), host=host)


def step_time(
    profile: Profile,
    tp: int,
    prefill_tokens: int,
    decode_batch: int,
    kv_tokens_read: int,
    *,
    prefill_requests: int | None = None,
) -> float:
    """Seconds of one scheduler step: a prefill pass (if any) then a decode pass (if any).

    Args:
        profile: GPU and model.
        tp: Tensor-parallel size.
        prefill_tokens: Prompt tokens prefilled in this step.
        decode_batch: Requests that decode one token in this step.
        kv_tokens_read: Sum of the context lengths of the decoding requests.
        prefill_requests: Requests the prefill tokens belong to (default 1 when there are any).
    """
    if prefill_requests is None:
        prefill_requests = 1 if prefill_tokens > 0 else 0
    return prefill_time(profile, tp, prefill_tokens, prefill_requests) + decode_time(
        profile, tp, decode_batch, kv_tokens_read
    )
