"""Two live simulator processes told they share one GPU (``--sim-shared-gpu``) slow each other.

Server A decodes one long request while server B prefills long prompts. With a shared GPU, A's
decode steps that overlap B's prefill passes share the modelled GPU with them (as two CUDA
contexts time-slice a real one), so A's decode takes longer than with B on its own GPU.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import Procs, read_trace

pytestmark = pytest.mark.integration


def _generate(url: str, prompt_len: int, max_new_tokens: int, token: int = 11) -> None:
    # One token repeated; distinct tokens per prompt, or the prefix cache would skip prefills.
    body = {"input_ids": [token] * prompt_len,
            "sampling_params": {"max_new_tokens": max_new_tokens}}  # fmt: skip
    req = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as answer:
        assert answer.status == 200


def _decode_span(procs: Procs, tmp: Path, shared: bool) -> float:
    """Seconds A needs for its 300 tokens while B prefills 8 prompts of 6000 tokens."""
    group = ["--sim-shared-gpu", f"t{uuid.uuid4().hex[:8]}"] if shared else []
    tag = "shared" if shared else "alone"
    trace = tmp / f"a_{tag}.jsonl"
    a = procs.sim("--sim-trace", str(trace), *group, name=f"a_{tag}")
    b = procs.sim(*group, name=f"b_{tag}")
    loads = [threading.Thread(target=_generate, args=(b.url, 6000, 1, 20 + i)) for i in range(8)]
    decode = threading.Thread(target=_generate, args=(a.url, 100, 300))
    decode.start()
    for t in loads:
        t.start()
    for t in (decode, *loads):
        t.join(timeout=150)
    (record,) = [r for r in read_trace(trace) if r["max_new_tokens"] == 300]
    return float(record["deadlines"][-1] - record["deadlines"][0])


def test_servers_on_one_shared_gpu_stretch_each_others_passes(
    procs: Procs, tmp_path: Path
) -> None:
    alone = _decode_span(procs, tmp_path, shared=False)
    shared = _decode_span(procs, tmp_path, shared=True)
    print(f"A's 300-token decode: {alone * 1e3:.0f} ms alone, {shared * 1e3:.0f} ms shared")
    # B's prefills keep the GPU busy for ~0.3 s of A's ~1.2 s decode; sharing it costs A that.
    assert shared > 1.1 * alone
