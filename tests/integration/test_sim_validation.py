"""The simulator validates a request before it allocates anything, and refuses what SGLang refuses.

One real simulator runs under an address-space limit (``RLIMIT_AS``) for the whole module: a
request for a billion new tokens must be a 400 at once, not a frozen server growing to the OOM
killer. Each bad body gets SGLang 0.5.23's status and error body shape, which depends on the
layer of SGLang that refuses it:

* ``schema``: the body does not parse into SGLang's request type (FastAPI + pydantic, SGLang
  turns the 422 into a 400): ``{"object": "error", "message", "type": "Bad Request", ...}``;
* ``contract``: ``/generate``'s JSON contract (``sglang.api.v1``): ``{"error": "<text>"}``;
* ``value``: the tokenizer manager's checks (context length, ranges): ``{"error": {"message"}}``
  on ``/generate``, ``{"object": "error", "type": "BadRequestError", ...}`` on ``/v1``.

A subprocess asks SGLang's own validators which of the first two layers refuses each body, so
the classification is SGLang's, not ours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.conftest import Proc, Procs, free_port, http_status, offline_env
from tests.integration.test_sim_api import post

pytestmark = pytest.mark.integration

MEMORY_LIMIT = 1536 * 1024**2  # the simulator needs about 0.5 GB of address space; a 1e9 draw 8+ GB
VOCAB = 151936  # Qwen2.5-3B's vocab_size (the default profile)

# Runs the simulator with RLIMIT_AS set (kept across exec), so a runaway allocation fails fast.
_LIMITED = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({0}, {0}));"
    "os.execv(sys.executable, [sys.executable, '-m', 'sglbench.sim', *sys.argv[1:]])"
)


@pytest.fixture(scope="module")
def limited_sim(module_procs: Procs) -> Proc:
    port = free_port()
    argv = [sys.executable, "-c", _LIMITED.format(MEMORY_LIMIT), "--port", str(port),
            "--sim-tokenizer-cache", str(module_procs.tokenizer_dir)]  # fmt: skip
    proc = module_procs.spawn("limited-sim", argv, url=f"http://127.0.0.1:{port}")
    proc.wait_ready()
    return proc


class HealthWatch:
    """Polls ``/health_generate`` in a thread; records every status (None: no answer in 1 s)."""

    def __init__(self, url: str) -> None:
        self.statuses: list[int | None] = []
        self._url = url + "/health_generate"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.statuses.append(http_status(self._url, timeout=1.0))
            self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


HUGE = 10**9
HUGE_REQUESTS = [
    ("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": HUGE}}),
    ("/generate",
     {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": HUGE}, "stream": True}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": HUGE}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": HUGE, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": HUGE}),
    ("/v1/chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": HUGE}),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body"), HUGE_REQUESTS)
def test_a_billion_new_tokens_is_a_400_at_once_and_the_server_stays_healthy(
    limited_sim: Proc, path: str, body: dict[str, Any]
) -> None:
    with HealthWatch(limited_sim.url) as watch:
        start = time.monotonic()
        status, raw = post(limited_sim.url + path, body, timeout=10)
        took = time.monotonic() - start
        time.sleep(0.3)  # a few more health polls after the answer
    assert status == 400 and took < 1.0, (status, took, raw[:200])
    assert "maximum context length of 32768 tokens" in raw.decode()
    assert watch.statuses and set(watch.statuses) == {200}
    assert limited_sim.popen.poll() is None
    small = {"input_ids": [1], "sampling_params": {"max_new_tokens": 2}}
    assert post(limited_sim.url + "/generate", small)[0] == 200


SCHEMA_KEYS = {"object", "message", "type", "param", "code"}


# (path, body, layer, what the simulator answers): the body must be exactly `expected` when it
# is a dict, or contain the text when it is a str.
BAD = [
    ("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 1e30}}, "contract",
     {"error": "invalid type: floating point `1e+30`, expected i64"}),
    ("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 10**30}}, "value",
     "maximum context length"),
    ("/generate", {"text": "hi", "sampling_params": {"temperature": "hot"}}, "contract",
     {"error": 'invalid type: string "hot", expected f64'}),
    ("/generate", {"input_ids": [-1, 5]}, "value", "out-of-vocabulary token id -1"),
    ("/generate", {"input_ids": [[1, 2], [3, VOCAB]]}, "value",
     f"out-of-vocabulary token id {VOCAB}; valid range is [0, {VOCAB})"),
    ("/generate", {"input_ids": ["a"]}, "schema", "input_ids"),
    ("/generate", {"input_ids": [[1, 2], ["a"]]}, "schema", "input_ids"),
    ("/generate", {"input_ids": [1.5]}, "schema", "input_ids"),
    ("/generate", {"input_ids": []}, "value", "input_ids cannot be empty."),
    ("/generate", {"text": 5}, "schema", "text"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 1e30}, "schema", "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 10**30}, "value", "maximum context length"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, "schema", "max_tokens must be positive"),
    ("/v1/completions", {"prompt": [-3]}, "value", "out-of-vocabulary token id -3"),
    ("/v1/completions", {"prompt": [["a"]]}, "schema", "prompt"),
    ("/v1/completions", {"max_tokens": 3}, "schema", "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "schema", "content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "schema", "content"),
    ("/v1/chat/completions", {"messages": [{"role": "bogus", "content": "x"}]}, "schema", "role"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "schema", "role"),
    ("/v1/chat/completions", {"messages": "hi"}, "schema", "messages"),
    ("/v1/chat/completions", {"messages": []}, "value", "Messages cannot be empty."),
]  # fmt: skip


def _check_shape(
    path: str, layer: str, answer: dict[str, Any], expected: dict[str, Any] | str
) -> None:
    if isinstance(expected, dict):
        assert answer == expected
        return
    if layer == "schema":
        assert answer.keys() == SCHEMA_KEYS and answer["type"] == "Bad Request"
        assert answer["code"] == 400 and answer["object"] == "error"
        message = answer["message"]
    elif path == "/generate":
        assert list(answer) == ["error"] and list(answer["error"]) == ["message"]
        message = answer["error"]["message"]
    else:
        assert answer["object"] == "error" and answer["type"] == "BadRequestError"
        assert answer["code"] == 400
        message = answer["message"]
    assert expected in message


@pytest.mark.parametrize(("path", "body", "layer", "expected"), BAD)
def test_bad_requests_get_sglangs_status_and_error_body(
    limited_sim: Proc, path: str, body: dict[str, Any], layer: str, expected: dict[str, Any] | str
) -> None:
    status, raw = post(limited_sim.url + path, body)
    assert status == 400, raw[:300]
    _check_shape(path, layer, json.loads(raw), expected)


def test_chat_messages_of_other_roles_may_omit_content(limited_sim: Proc) -> None:
    parts = [{"type": "text", "text": "hi"}]
    body = {"messages": [{"role": "SYSTEM"}, {"role": "user", "content": parts}], "max_tokens": 2}
    status, raw = post(limited_sim.url + "/v1/chat/completions", body)
    assert status == 200, raw[:300]
    assert json.loads(raw)["usage"]["completion_tokens"] == 2


# Asks SGLang's own request types which layer refuses each body: "schema" (the pydantic request
# models; for /generate the input_ids validator and the declared type of ``text`` of
# GenerateReqInput, whose module does not import here), "contract" (sglang.api.v1), or "value"
# (every layer accepts it; the tokenizer manager's checks refuse it later).
_SGLANG_LAYERS = r"""
import json, sys
from typing import List, Optional, Union
from pydantic import TypeAdapter
from sglang.api.v1.api_types import GenerateRequest, JsonContractError
from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest
from sglang.srt.utils.field_validators import validate_optional_list_i64_1d_2d
models = {"/v1/completions": CompletionRequest, "/v1/chat/completions": ChatCompletionRequest}
text_type = TypeAdapter(Optional[Union[List[str], str]])  # GenerateReqInput.text
layers = []
for path, body in json.load(sys.stdin):
    try:
        if path == "/generate":
            validate_optional_list_i64_1d_2d(body.get("input_ids"))
            text_type.validate_python(body.get("text"))
            try:
                GenerateRequest.from_json_value(body)
            except JsonContractError:
                layers.append("contract")
                continue
        else:
            models[path].model_validate(body)
        layers.append("value")
    except ValueError:
        layers.append("schema")
print(json.dumps(layers))
"""


def test_the_refusing_layer_is_the_one_sglang_refuses_at() -> None:
    bodies = json.dumps([(path, body) for path, body, _, _ in BAD])
    done = subprocess.run([sys.executable, "-c", _SGLANG_LAYERS], input=bodies, capture_output=True,
                          text=True, timeout=240, env=offline_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    layers = json.loads(done.stdout.splitlines()[-1])
    assert layers == [layer for _, _, layer, _ in BAD]
