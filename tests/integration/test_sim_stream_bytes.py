"""The exact bytes of the simulator's streamed responses, native and OpenAI, pinned.

A stream is read off a raw socket: status line, headers (all but ``Date``), and every HTTP chunk
of the chunked body with its declared size, so a change of framing, of JSON spacing or key order,
or of how events map to HTTP chunks fails here. Only the values that differ per run are masked:
``e2e_latency`` and ``created``. A second test rebuilds each OpenAI chunk with SGLang's own
serializers (pydantic ``CompletionStreamResponse``, msgspec ``build_sse_content``) and each
native event with orjson (SGLang's ``dumps_json``), from the values the simulator sent, and
requires the same bytes.
"""

# ruff: noqa: E501  (the pinned events are long lines, kept whole so that they read as sent)
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.conftest import Procs, offline_env

pytestmark = pytest.mark.integration


@dataclass
class Raw:
    """One HTTP response as it came off the wire."""

    head: list[str]  # status line and headers, without Date
    chunks: list[bytes]  # the payload of every HTTP chunk, in order (the last, empty one too)


def raw_post(url: str, path: str, body: dict[str, Any]) -> Raw:
    """POST ``body`` over a plain socket (HTTP/1.1, Connection: close) and split the answer."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while part := sock.recv(65536):
            received += part
    head, _, rest = received.partition(b"\r\n\r\n")
    lines = [x for x in head.decode().split("\r\n") if not x.lower().startswith("date:")]
    chunks: list[bytes] = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n", "a chunk's declared size is not its size"
        rest = rest[size + 2 :]
        if size == 0:
            assert rest == b""
            return Raw(lines, chunks)


def masked(chunk: bytes) -> str:
    text = re.sub(r'"e2e_latency":[0-9.e+-]+', '"e2e_latency":E', chunk.decode())
    return re.sub(r'"created":\d+', '"created":C', text)


SSE_HEAD = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-cache",
            "Transfer-Encoding: chunked", "Server: Python/3.11 aiohttp/3.14.5",
            "Connection: close"]  # fmt: skip

NATIVE = {"rid": "pin-native", "input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 3},
          "stream": True}  # fmt: skip
NATIVE_CHUNKS = [
    'data: {"text":" companies","output_ids":[5110],"meta_info":{"id":"pin-native","finish_reason":null,"prompt_tokens":3,"weight_version":"default","total_retractions":0,"completion_tokens":1,"cached_tokens":0,"e2e_latency":E}}\n\n',
    'data: {"text":" companies cost","output_ids":[5110,2783],"meta_info":{"id":"pin-native","finish_reason":null,"prompt_tokens":3,"weight_version":"default","total_retractions":0,"completion_tokens":2,"cached_tokens":0,"e2e_latency":E}}\n\n',
    'data: {"text":" companies cost puts","output_ids":[5110,2783,9521],"meta_info":{"id":"pin-native","finish_reason":{"type":"length","length":3},"prompt_tokens":3,"weight_version":"default","total_retractions":0,"completion_tokens":3,"cached_tokens":0,"e2e_latency":E}}\n\n',
]

COMPLETION = {"rid": "pin-cmpl", "model": "qwen-sim", "prompt": "Say hi", "max_tokens": 3,
              "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
COMPLETION_CHUNKS = [
    'data: {"id":"pin-cmpl","object":"text_completion","created":C,"model":"qwen-sim","choices":[{"index":0,"text":" companies","logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}\n\n',
    'data: {"id":"pin-cmpl","object":"text_completion","created":C,"model":"qwen-sim","choices":[{"index":0,"text":" cost","logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}\n\n',
    'data: {"id":"pin-cmpl","object":"text_completion","created":C,"model":"qwen-sim","choices":[{"index":0,"text":" puts","logprobs":null,"finish_reason":"length","matched_stop":null}],"usage":null}\n\n',
    'data: {"id":"pin-cmpl","object":"text_completion","created":C,"model":"qwen-sim","choices":[],"usage":{"prompt_tokens":2,"total_tokens":5,"completion_tokens":3,"reasoning_tokens":0}}\n\n',
]

CHAT = {"rid": "pin-chat", "model": "qwen-sim", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
CHAT_CHUNKS = [
    'data: {"id":"pin-chat","object":"chat.completion.chunk","created":C,"model":"qwen-sim","choices":[{"index":0,"delta":{"reasoning_content":null,"role":"assistant","content":""},"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n',
    'data: {"id":"pin-chat","object":"chat.completion.chunk","created":C,"model":"qwen-sim","choices":[{"index":0,"delta":{"reasoning_content":null,"content":" companies"},"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n',
    'data: {"id":"pin-chat","object":"chat.completion.chunk","created":C,"model":"qwen-sim","choices":[{"index":0,"delta":{"reasoning_content":null,"content":" cost"},"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n',
    'data: {"id":"pin-chat","object":"chat.completion.chunk","created":C,"model":"qwen-sim","choices":[{"index":0,"delta":{"reasoning_content":null,"content":" puts"},"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n',
    'data: {"id":"pin-chat","object":"chat.completion.chunk","created":C,"model":"qwen-sim","choices":[{"index":0,"delta":{"reasoning_content":null},"logprobs":null,"finish_reason":"length","matched_stop":null}]}\n\n',
    'data: {"id":"pin-chat","object":"chat.completion.chunk","created":C,"model":"qwen-sim","choices":[],"usage":{"prompt_tokens":9,"total_tokens":12,"completion_tokens":3,"prompt_tokens_details":null,"reasoning_tokens":0,"completion_tokens_details":null}}\n\n',
]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [("/generate", NATIVE, NATIVE_CHUNKS), ("/v1/completions", COMPLETION, COMPLETION_CHUNKS),
     ("/v1/chat/completions", CHAT, CHAT_CHUNKS)],
    ids=["native", "completions", "chat"],
)
def test_streamed_bytes_are_pinned(
    procs: Procs, path: str, body: dict[str, Any], expected: list[str]
) -> None:
    # A fresh simulator per case: its seeded output words depend on the requests before.
    sim = procs.sim("--served-model-name", "qwen-sim", "--sim-seed", "7")
    raw = raw_post(sim.url, path, body)
    assert raw.head == SSE_HEAD
    assert [masked(c) for c in raw.chunks] == [*expected, "data: [DONE]\n\n", ""]


# Rebuilds each OpenAI event with SGLang 0.5.23's own serializers from the values in it.
_SGLANG_BYTES = r"""
import json, sys
from sglang.srt.entrypoints.openai.protocol import (
    ChatCompletionStreamResponse, CompletionResponseStreamChoice, CompletionStreamResponse,
    UsageInfo)
from sglang.srt.entrypoints.openai.sse_utils import build_sse_content
out = []
for path, payload in json.load(sys.stdin):
    c = json.loads(payload)
    head = dict(id=c["id"], created=c["created"], model=c["model"])
    if not c["choices"]:
        usage = UsageInfo(**c["usage"])
        if path == "/v1/completions":
            event = CompletionStreamResponse(**head, choices=[], usage=usage).model_dump_json(
                exclude_none=True)
        else:
            event = ChatCompletionStreamResponse(**head, choices=[], usage=usage).model_dump_json()
        out.append("data: " + event + "\n\n")
        continue
    choice = c["choices"][0]
    if path == "/v1/completions":
        choice = CompletionResponseStreamChoice(index=choice["index"], text=choice["text"],
            logprobs=None, finish_reason=choice["finish_reason"], matched_stop=None)
        event = CompletionStreamResponse(**head, object="text_completion", choices=[choice])
        out.append("data: " + event.model_dump_json() + "\n\n")
    else:
        delta = choice["delta"]
        out.append(build_sse_content(chunk_id=c["id"], created=c["created"], model=c["model"],
            index=choice["index"], role=delta.get("role"), content=delta.get("content"),
            finish_reason=choice["finish_reason"]))
print(json.dumps(out))
"""


def test_every_event_is_what_sglangs_own_serializers_write(procs: Procs) -> None:
    sim = procs.sim("--served-model-name", "qwen-sim")
    native = raw_post(sim.url, "/generate", {**NATIVE, "rid": 'pin-é "q"\n'})  # echoed as id
    for chunk in native.chunks[:-2]:  # SGLang's dumps_json is orjson with these options
        payload = json.loads(chunk.removeprefix(b"data: "))
        dumped = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        assert chunk == b"data: " + dumped + b"\n\n"
    events: list[tuple[str, str]] = []
    for path, body in (("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)):
        for model in ("qwen-sim", "modèle \"x\""):  # non-ASCII and quotes in a string we echo
            raw = raw_post(sim.url, path, {**body, "model": model})
            events += [(path, c.decode()) for c in raw.chunks[:-2]]
    payloads = json.dumps([(path, e.removeprefix("data: ").strip()) for path, e in events])
    done = subprocess.run([sys.executable, "-c", _SGLANG_BYTES], input=payloads,
                          capture_output=True, text=True, timeout=240, env=offline_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [e for _, e in events]
