"""The simulator's prefix cache: SGLang's radix-cache semantics, and how the engine uses it."""

from __future__ import annotations

import asyncio

from sglbench.sim.engine import Engine, EngineConfig, GenRequest, Role
from sglbench.sim.prefix_cache import PromptCache, RadixCache
from sglbench.sim.profiles import load_profile
from sglbench.sim.telemetry import Telemetry

PROFILE = load_profile("gh200-qwen2.5-3b")


def test_a_match_ending_inside_an_edge_splits_it_and_keeps_the_sizes() -> None:
    tree = RadixCache()
    tree.insert([1, 2, 3, 4, 5])
    assert tree.match([1, 2, 3, 9])[0] == 3  # ends inside the edge 1..5: split after 3
    tree.insert([1, 2, 3, 9, 9])
    assert tree.evictable == 7 and tree.protected == 0  # 1 2 3 | 4 5 | 9 9
    assert tree.match([1, 2, 3, 4, 5, 6])[0] == 5
    assert tree.match([7])[0] == 0


def test_a_locked_prefix_is_not_evictable_and_lru_leaves_go_first() -> None:
    tree = RadixCache()
    tree.insert([1, 2, 3, 4])
    new = tree.insert([1, 2, 8, 8])  # shares 1 2, so its edge splits: 1 2 | 3 4 and | 8 8
    tree.lock(new)
    assert (tree.evictable, tree.protected) == (2, 4)  # 3 4 evictable; 1 2 8 8 in use
    assert tree.evict(100) == 2  # only the unlocked leaf could go
    assert tree.match([1, 2, 3, 4])[0] == 2
    tree.unlock(new)
    assert tree.match([1, 2, 8, 8])[0] == 4
    assert tree.evict(1) == 2 and tree.evictable == 2  # the leaf 8 8, then nothing more needed
    assert tree.evict(2) == 2 and tree.evictable == 0  # its parent 1 2 became a leaf


def test_least_recently_used_goes_first() -> None:
    tree = RadixCache()
    tree.insert([1, 1, 1])
    tree.insert([2, 2, 2])
    tree.match([1, 1, 1])  # prompt 1 used again: prompt 2 is now the older one
    tree.evict(1)
    assert tree.match([1, 1, 1])[0] == 3 and tree.match([2, 2, 2])[0] == 0


def test_prompt_cache_skips_at_most_all_but_the_last_token_and_flushes_only_when_idle() -> None:
    cache = PromptCache()
    prompt = [5, 6, 7, 8]
    assert cache.admit("a", prompt) == 0
    cache.filled("a", prompt)
    assert cache.admit("b", prompt) == 3  # the last token is computed for its logits
    assert cache.admit("c", [5, 6, 1, 1]) == 2
    assert not cache.flush()  # requests still hold their prefixes
    for owner in ("a", "b", "c"):
        cache.release(owner)
    assert cache.tree.evictable == 4 and cache.tree.protected == 0
    cache.fit(1)  # the KV pool has room for 1 cached token only
    assert cache.tree.evictable <= 1
    assert cache.flush() and cache.admit("d", prompt) == 0


def first_token_delay(role: Role, prompts: list[list[int]], flush_before_last: bool = False,
                      telemetry: Telemetry | None = None) -> tuple[list[float], list[int]]:
    """Per prompt, sent one after the other: (first-token delay, cached tokens)."""
    engine = Engine(EngineConfig(role=role, profile=PROFILE, time_scale=0.05,
                                 telemetry=telemetry))  # fmt: skip

    async def main() -> tuple[list[float], list[int]]:
        await engine.start()
        loop = asyncio.get_running_loop()
        delays, cached = [], []
        try:
            for i, ids in enumerate(prompts):
                if flush_before_last and i == len(prompts) - 1:
                    assert engine.flush_cache()
                req = GenRequest(f"r{i}", len(ids), 2, kv_ready=role == "decode", prompt_ids=ids)
                start = loop.time()
                events = [e async for e in engine.generate(req)]
                delays.append(events[0].deadline - start)
                cached.append(req.times.cached_tokens)
        finally:
            await engine.stop()
        return delays, cached

    return asyncio.run(main())


SYSTEM = list(range(1000, 9000))  # an 8000-token shared system prompt


def test_a_shared_prefix_is_not_computed_again_and_the_hits_are_counted() -> None:
    telemetry = Telemetry("null", "m")
    prompts = [SYSTEM + [7] * 64, SYSTEM + [8] * 64]
    delays, cached = first_token_delay("null", prompts, telemetry=telemetry)
    assert cached == [0, 8000]
    assert delays[1] < 0.5 * delays[0]  # prefill cost counts the 64 new tokens, not 8064
    effective = telemetry.effective_tokens.series
    assert effective[("device_hit",)] == 8000 and effective[("input",)] == 8064 + 64
    assert telemetry.last_hit_rate == 8000 / 8064


def test_flush_brings_misses_back_and_decode_has_no_cache() -> None:
    prompts = [SYSTEM + [7] * 64, SYSTEM + [8] * 64]
    assert first_token_delay("null", prompts, flush_before_last=True)[1] == [0, 0]
    assert first_token_delay("prefill", prompts)[1] == [0, 8000]
    assert first_token_delay("decode", prompts)[1] == [0, 0]
