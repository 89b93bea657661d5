"""The simulator's HTTP API as clients see it: SGLang's SSE, info endpoints, errors, OpenAI.

One real simulator subprocess (aggregated) serves most tests of this module; tests that need
special flags start their own.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
from tokenizers import Tokenizer

from tests.conftest import Proc, Procs, free_port, http_status, offline_env

pytestmark = pytest.mark.integration


def post(url: str, body: bytes | dict[str, Any], timeout: float = 30.0) -> tuple[int, bytes]:
    """POST JSON (or raw bytes); return status and body, also for error statuses."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def sse_events(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [
        line[len("data: ") :] for line in raw.decode().split("\n\n") if line.startswith("data: ")
    ]


@pytest.fixture(scope="module")
def sim(module_procs: Procs) -> Proc:
    return module_procs.sim("--served-model-name", "qwen-sim", "--sim-seed", "7")


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def test_stream_is_sglang_sse_with_cumulative_text(sim: Proc, hf_tokenizer: Tokenizer) -> None:
    prompt = "The quick brown fox jumps over the lazy dog."
    status, raw = post(
        sim.url + "/generate",
        {
            "text": prompt,
            "sampling_params": {"max_new_tokens": 6, "ignore_eos": True},
            "stream": True,
            "model": "x",
            "log_metrics": True,
            "return_text_in_logprobs": False,
        },
    )
    assert status == 200
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["meta_info"]["completion_tokens"] for c in chunks] == [1, 2, 3, 4, 5, 6]
    assert [c["meta_info"]["finish_reason"] for c in chunks[:-1]] == [None] * 5
    assert chunks[-1]["meta_info"]["finish_reason"] == {"type": "length", "length": 6}
    assert chunks[0]["meta_info"]["prompt_tokens"] == len(hf_tokenizer.encode(prompt).ids)
    for before, after in itertools.pairwise(chunks):
        assert after["text"].startswith(before["text"])
    last = chunks[-1]
    # The text is the real detokenization of the ids, and re-tokenizes to the same ids.
    assert hf_tokenizer.decode(last["output_ids"]) == last["text"]
    assert hf_tokenizer.encode(last["text"], add_special_tokens=False).ids == last["output_ids"]
    assert set(last["meta_info"]) >= {
        "id",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "finish_reason",
        "e2e_latency",
    }


def test_non_stream_batch_of_token_ids(sim: Proc) -> None:
    status, raw = post(
        sim.url + "/generate",
        {
            "input_ids": [[1, 2, 3], [4, 5, 6, 7, 8]],
            "sampling_params": {"max_new_tokens": 4},
        },
    )
    assert status == 200
    outs = json.loads(raw)
    assert [o["meta_info"]["prompt_tokens"] for o in outs] == [3, 5]
    assert [len(o["output_ids"]) for o in outs] == [4, 4]


def test_default_max_new_tokens_is_sglangs_128(sim: Proc) -> None:
    status, raw = post(sim.url + "/generate", {"input_ids": [1, 2]})
    assert status == 200
    assert json.loads(raw)["meta_info"]["completion_tokens"] == 128


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"text": "hi", ', "not valid JSON"),
        (b'["a list"]', "JSON object"),
        ({"sampling_params": {"max_new_tokens": 3}}, "text, input_ids"),
        ({"text": "hi", "sampling_params": {"max_new_tokens": -1}}, "max_new_tokens"),
        (
            {"text": "hi", "sampling_params": {"max_new_tokens": 10**6}, "stream": True},
            "context length",
        ),
        ({"text": "hi", "sampling_params": {"temperature": -1}}, "temperature"),
    ],
)
def test_bad_input_is_a_400_with_a_message(sim: Proc, body: Any, fragment: str) -> None:
    status, raw = post(sim.url + "/generate", body)
    assert status == 400
    answer = json.loads(raw)
    if isinstance(body, bytes):  # refused by SGLang's request model: its ErrorResponse body
        assert answer["object"] == "error" and answer["type"] == "Bad Request"
        assert fragment in answer["message"]
    else:  # refused by the tokenizer manager's checks
        assert fragment in answer["error"]["message"]


def test_info_endpoints_answer_like_sglang(sim: Proc) -> None:
    assert http_status(sim.url + "/health") == 200
    assert get_json(sim.url + "/v1/models")["data"][0]["id"] == "qwen-sim"
    for path in ("/model_info", "/get_model_info"):
        assert get_json(sim.url + path)["model_path"] == "Qwen/Qwen2.5-3B-Instruct"
    for path in ("/server_info", "/get_server_info"):
        info = get_json(sim.url + path)
        assert info["simulated"] is True
        assert info["sim_profile"] == "gh200-qwen2.5-3b"
        assert info["disaggregation_mode"] == "null"
        assert info["tp_size"] == 1
        assert info["max_total_num_tokens"] > 0
        assert {"last_gen_throughput", "avg_spec_accept_length"} <= set(info["internal_states"][0])
    assert http_status(sim.url + "/flush_cache") == 200
    assert post(sim.url + "/flush_cache?timeout=60.0", b"")[0] == 200


def test_metrics_count_tokens(sim: Proc) -> None:
    def counter(name: str) -> float:
        with urllib.request.urlopen(sim.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        # Summed over its series (is_streaming splits them); absent until a first request.
        lines = [x for x in text.splitlines() if x.startswith(name + "{")]
        return sum(float(x.rsplit(" ", 1)[1]) for x in lines)

    before = counter("sglang:generation_tokens_total")
    assert (
        post(
            sim.url + "/generate",
            {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 5}},
        )[0]
        == 200
    )
    assert counter("sglang:generation_tokens_total") == before + 5
    assert counter("sglang:num_running_reqs") == 0


def test_openai_package_streams_completions_and_chat(sim: Proc) -> None:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="none", max_retries=0)
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model="qwen-sim", prompt="Say something", max_tokens=5, stream=True
        )
    ]
    assert len(pieces) == 5 and all(pieces)
    chunks = list(
        client.chat.completions.create(
            model="qwen-sim",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0] for c in chunks if c.choices]
    # SGLang's chat stream: a role chunk with empty content, the text, a finish-only chunk.
    assert (deltas[0].delta.role, deltas[0].delta.content) == ("assistant", "")
    assert deltas[-1].delta.content is None and deltas[-1].finish_reason == "length"
    content = [d.delta.content for d in deltas[1:-1]]
    assert len(content) == 4 and all(content)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    whole = client.chat.completions.create(
        model="qwen-sim", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 3


def test_openai_bad_request_is_a_400(sim: Proc) -> None:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="qwen-sim", prompt="x", max_tokens=-1)


def test_startup_delay_then_ready_and_stream_interval(procs: Procs) -> None:
    proc = procs.sim("--sim-startup-delay", "4", "--stream-interval", "4", wait=False)
    deadline = time.monotonic() + 30
    statuses: list[int | None] = []
    while time.monotonic() < deadline and 200 not in statuses:
        statuses.append(http_status(proc.url + "/health_generate"))
        if statuses[-1] == 503:
            answer = post(proc.url + "/generate", {"input_ids": [1]})[0]
            # 503 while starting; 200 only if it turned ready between the two calls
            assert answer == 503 or (answer == 200 and http_status(proc.url + "/health") == 200)
        time.sleep(0.05)
    assert 503 in statuses and statuses[-1] == 200
    # SGLang's --stream-interval: one event per 4 tokens, and always the last one.
    body = {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 10}, "stream": True}
    events = [json.loads(e) for e in sse_events(post(proc.url + "/generate", body)[1])[:-1]]
    assert [e["meta_info"]["completion_tokens"] for e in events] == [4, 8, 10]


def test_decode_server_refuses_a_request_without_bootstrap(procs: Procs) -> None:
    proc = procs.sim("--disaggregation-mode", "decode")
    status, raw = post(proc.url + "/generate", {"input_ids": [1, 2]})
    assert status == 400
    assert "bootstrap_room" in json.loads(raw)["error"]["message"]


def test_fail_rate_and_fail_after(procs: Procs) -> None:
    failing = procs.sim("--sim-fail-rate", "1", name="failing")
    status, raw = post(failing.url + "/generate", {"input_ids": [1]})
    assert status == 500 and "error" in json.loads(raw)
    dying = procs.sim("--sim-fail-after", "2", name="dying")
    for _ in range(2):
        assert (
            post(
                dying.url + "/generate",
                {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}},
            )[0]
            == 200
        )
    assert dying.popen.wait(15) == 1


def _run_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sglbench.sim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=offline_env(),
    )


def test_port_in_use_is_one_line_and_exit_2(tokenizer_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run_sim("--port", str(port), "--sim-tokenizer-cache", str(tokenizer_dir))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--port" in errors[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--sim-profile", "tpu-v9"], "--sim-profile"),
        (["--port", "http"], "--port"),
        (["--mem-fraction-static", "1.5"], "--mem-fraction-static"),
        (["--sim-profle", "x"], "--sim-profle"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: list[str], flag: str) -> None:
    done = _run_sim("--port", str(free_port()), *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and flag in done.stderr
