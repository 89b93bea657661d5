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
* Decode runs in CUDA graphs, so its fixed cost is small (``step_overhead_ms``, plus a little per
  running request). Prefill runs eagerly; on a 3B model the kernel launches dominate, hence a
  large ``prefill_overhead_ms``. Both were fitted on real GH200 runs.
* Tensor parallelism divides bytes and FLOPs by ``tp`` and adds two all-reduces per layer.
* KV capacity is what SGLang reports: ``memory * mem_fraction - weights - reserved`` divided by
  the KV bytes per token; KV heads are replicated when ``tp`` exceeds them.
* A KV transfer (PD) costs ``kv bytes / link bandwidth + kv_transfer_latency_ms``.

All durations are seconds of modelled GPU time; the engine scales them by ``--sim-time-scale``.
"""

from __future__ import annotations

import math

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


def decode_time(profile: Profile, tp: int, batch: int, kv_tokens_read: int) -> float:
    """Seconds of one decode pass of ``batch`` requests whose contexts hold ``kv_tokens_read``."""
    if batch <= 0:
        return 0.0
    per_tok = kv_bytes_per_token(profile)
    bytes_moved = weight_bytes(profile) + (kv_tokens_read + batch) * per_tok
    flops = 2.0 * profile.model.params_B * 1e9 * batch + _attention_flops(profile, kv_tokens_read)
    eff = profile.efficiency
    fixed = (eff.step_overhead_ms + eff.per_seq_overhead_ms * batch) / 1e3
    return fixed + _roofline(profile, tp, bytes_moved, flops)


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
    if tokens <= 0:
        return 0.0
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
    fixed = (eff.prefill_overhead_ms + eff.per_prefill_req_overhead_ms * requests) / 1e3
    return fixed + _roofline(profile, tp, bytes_moved, flops)


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
