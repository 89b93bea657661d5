"""OpenAI wire formats: the streams of ``/v1/completions`` and ``/v1/chat/completions`` byte for
byte as SGLang's, and SGLang's OpenAI error body.

SGLang 0.5.23 writes completion chunks with pydantic (``CompletionStreamResponse``), chat chunks
with msgspec (``build_sse_content``), both compact JSON with non-ASCII left as UTF-8; each chunk
is its own HTTP chunk. A chat stream opens with a role-only chunk (``content: ""``), carries the
new text of each step, and ends with a chunk holding only ``finish_reason``; a completion stream
puts ``finish_reason`` on its last text chunk. With ``stream_options.include_usage`` a usage
chunk (``choices: []``) comes last, then ``[DONE]``. Chunk ids are the request's ``rid`` (a uuid4
hex when the client sends none), as SGLang's tokenizer manager assigns them.

The frames are assembled from pieces made once per request, because at hundreds of streams a
JSON encoder call per token would be most of the server's CPU (see
``benchmarks/sim_overhead.py``); ``tests/integration/test_sim_stream_bytes.py`` checks them
against SGLang's own serializers.
"""

from __future__ import annotations

import json

from aiohttp import web

from sglbench.sim.protocol import InvalidBody
from sglbench.sim.service import Job, RequestError, Token
from sglbench.sim.stream import json_str, sse

_NEXT = ',"logprobs":null,"finish_reason":null,"matched_stop":null}]'
_LAST = ',"logprobs":null,"finish_reason":"length","matched_stop":null}]'


class OpenAIFormat:
    """OpenAI SSE events of one request (a :class:`sglbench.sim.stream.StreamFormat`)."""

    def __init__(
        self, jobs: list[Job], chat: bool, created: int, model: str, include_usage: bool
    ) -> None:
        """Pieces of every job's chunks, made once."""
        self._jobs = jobs
        self._chat = chat
        self._include_usage = include_usage
        obj = "chat.completion.chunk" if chat else "text_completion"
        self._heads = [
            f'{{"id":{json_str(j.rid)},"object":"{obj}","created":{created},'
            f'"model":{json_str(model)},"choices":['
            for j in jobs
        ]
        # Each text event is pre + the new text (JSON-escaped) + post.
        if chat:
            opening = '{{"index":{},"delta":{{"reasoning_content":null,"content":"'
            post = f'"}}{_NEXT}}}\n\n'.encode()
            self._posts = (post, post)
        else:
            opening = '{{"index":{},"text":"'
            next_post, last_post = (f'"{t},"usage":null}}\n\n'.encode() for t in (_NEXT, _LAST))
            self._posts = (next_post, last_post)
        self._pres = [f"data: {h}{opening.format(i)}".encode() for i, h in enumerate(self._heads)]
        self._pending = [bytearray() for _ in jobs]  # JSON-escaped text not sent yet
        self._tokens = [0] * len(jobs)
        self._started = [False] * len(jobs)  # a chat stream's first event carries the role
        self._last = 0  # the job whose output came last (SGLang's usage chunk takes its id)

    def add(self, index: int, token: Token) -> None:
        """Record a token."""
        self._pending[index] += token.text_json
        self._tokens[index] += 1
        self._last = index

    def events(self, index: int, token: Token, now: float) -> tuple[bytes, ...]:
        """The text since the job's last event (a chat stream's first one has the role first)."""
        pending = self._pending[index]
        event = b"".join((self._pres[index], pending, self._posts[token.finished]))
        pending.clear()
        if not self._chat or self._started[index]:
            return (event,)
        self._started[index] = True
        head = self._heads[index]
        role = f'{head}{{"index":{index},"delta":{{"reasoning_content":null,"role":"assistant"'
        return sse(f'{role},"content":""}}{_NEXT}}}'), event

    def closing(self) -> tuple[bytes, ...]:
        """Chat: a finish chunk per job; then the usage chunk if asked for."""
        out: list[bytes] = []
        if self._chat:
            for i, head in enumerate(self._heads):
                if self._tokens[i]:
                    out.append(
                        sse(f'{head}{{"index":{i},"delta":{{"reasoning_content":null}}{_LAST}}}')
                    )
        if self._include_usage:
            out.append(sse(f"{self._heads[self._last]}],{self._usage()}}}"))
        return tuple(out)

    def _usage(self) -> str:
        prompt = sum(j.prompt_len for j in self._jobs)
        done = sum(self._tokens)
        counts = (
            f'"prompt_tokens":{prompt},"total_tokens":{prompt + done},"completion_tokens":{done}'
        )
        if self._chat:  # pydantic without exclude_none: the empty details are null
            return (
                f'"usage":{{{counts},"prompt_tokens_details":null,"reasoning_tokens":0,'
                '"completion_tokens_details":null}'
            )
        return f'"usage":{{{counts},"reasoning_tokens":0}}'

    def error_event(self, failure: RequestError) -> bytes:
        """SGLang's OpenAI in-stream error (``json.dumps`` of its ErrorResponse)."""
        kind = "BadRequestError" if failure.status == 400 else "InternalServerError"
        error = {"object": "error", "message": str(failure), "type": kind, "param": None,
                 "code": failure.status}  # fmt: skip
        return sse(json.dumps({"error": error}))

    def error_response(self, failure: RequestError) -> web.Response:
        """SGLang's OpenAI error body."""
        return openai_error(failure)


def openai_error(exc: RequestError) -> web.Response:
    """SGLang's OpenAI-style error response (``Bad Request``: its request model refused it)."""
    kind = {400: "BadRequestError", 503: "ServiceUnavailableError"}.get(
        exc.status, "InternalServerError"
    )
    if isinstance(exc, InvalidBody):
        kind = "Bad Request"
    body = {"object": "error", "message": str(exc), "type": kind, "param": None, "code": exc.status}
    return web.json_response(body, status=exc.status)
