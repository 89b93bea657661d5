"""The simulator's profiles and physical timing model give the numbers a user would expect."""

from __future__ import annotations

import pytest

from sglbench.errors import ConfigError
from sglbench.sim import timing
from sglbench.sim.profiles import DEFAULT_PROFILE, PROFILE_NAMES, load_profile

GH200 = load_profile("gh200-qwen2.5-3b")
H100 = load_profile("h100-qwen2.5-3b")
A100 = load_profile("a100-qwen2.5-3b")


def test_every_shipped_profile_loads_and_the_default_is_gh200() -> None:
    assert DEFAULT_PROFILE == "gh200-qwen2.5-3b"
    assert {load_profile(name).name for name in PROFILE_NAMES} == set(PROFILE_NAMES)
    assert GH200.model.layers == 36 and GH200.model.kv_heads == 2


def test_unknown_profile_is_one_line_naming_the_flag_and_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_profile("b200-llama")
    message = str(err.value)
    assert "--sim-profile 'b200-llama' is unknown" in message
    assert all(name in message for name in PROFILE_NAMES)
    assert "\n" not in message


def test_kv_bytes_follow_the_model_shape() -> None:
    # 2 (K and V) * 36 layers * 2 KV heads * 128 head dim * 2 bytes (bf16)
    assert timing.kv_bytes_per_token(GH200) == 36864
    assert timing.kv_bytes(GH200, 1000) == 36_864_000


def test_kv_capacity_matches_what_real_sglang_reported_on_gh200() -> None:
    # The reference agg run's server_info: token_capacity 2301720 at --mem-fraction-static 0.9.
    capacity = timing.kv_capacity_tokens(GH200, tp=1, mem_fraction=0.9)
    assert capacity == pytest.approx(2_301_720, rel=0.01)
    assert timing.kv_capacity_tokens(GH200, 1, 0.45) < capacity / 2
    assert timing.kv_capacity_tokens(GH200, 1, 0.05) == 0


def test_tensor_parallel_gives_more_kv_room_per_token() -> None:
    assert timing.kv_capacity_tokens(GH200, 2, 0.9) > timing.kv_capacity_tokens(GH200, 1, 0.9)


def test_decode_is_bandwidth_bound_so_faster_hbm_decodes_faster() -> None:
    steps = [timing.decode_time(p, 1, 32, 32 * 200) for p in (GH200, H100, A100)]
    assert steps[0] < steps[1] < steps[2]
    # Weights dominate a small batch: the step is at least weights / peak bandwidth.
    weights_s = timing.weight_bytes(GH200) / (GH200.gpu.hbm_bandwidth_GBps * 1e9)
    assert steps[0] > weights_s


def test_bigger_batches_and_longer_contexts_cost_more() -> None:
    assert timing.decode_time(GH200, 1, 64, 64 * 100) > timing.decode_time(GH200, 1, 8, 8 * 100)
    assert timing.decode_time(GH200, 1, 8, 8 * 8000) > timing.decode_time(GH200, 1, 8, 8 * 100)
    assert timing.prefill_time(GH200, 1, 8192) > 2 * timing.prefill_time(GH200, 1, 512)
    assert timing.decode_time(GH200, 1, 0, 0) == 0.0
    assert timing.prefill_time(GH200, 1, 0) == 0.0


def test_a_step_with_prefill_is_much_slower_than_a_pure_decode_step() -> None:
    decode_only = timing.step_time(GH200, 1, 0, 16, 16 * 100)
    with_prefill = timing.step_time(GH200, 1, 128, 16, 16 * 100)
    assert with_prefill > 3 * decode_only


def test_large_prefill_is_compute_bound_and_a_tp2_server_halves_it_roughly() -> None:
    one = timing.prefill_time(GH200, 1, 8192) - GH200.efficiency.prefill_overhead_ms / 1e3
    two = timing.prefill_time(GH200, 2, 8192) - GH200.efficiency.prefill_overhead_ms / 1e3
    assert two == pytest.approx(one / 2, rel=0.15)
    assert timing.prefill_time(A100, 1, 8192) > 2.5 * timing.prefill_time(GH200, 1, 8192) / 2


def test_kv_transfer_time_is_latency_plus_bytes_over_link() -> None:
    latency = GH200.efficiency.kv_transfer_latency_ms / 1e3
    assert timing.kv_transfer_time(GH200, 0) == pytest.approx(latency)
    per_token = timing.kv_bytes_per_token(GH200) / (GH200.gpu.link_bandwidth_GBps * 1e9)
    assert timing.kv_transfer_time(GH200, 10_000) == pytest.approx(latency + 10_000 * per_token)
