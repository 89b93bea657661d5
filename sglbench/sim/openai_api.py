"""OpenAI-compatible endpoints of the simulator: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` (streaming and not), in the format SGLang serves them.

Chat prompts are rendered with Qwen's ChatML template before counting tokens, as SGLang applies
the model's chat template. Streams and error bodies are in :mod:`sglbench.sim.openai_format`;
requests are checked as :mod:`sglbench.sim.protocol` says.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from sglbench.sim.engine import EngineStopped
from sglbench.sim.openai_format import OpenAIFormat, openai_error
from sglbench.sim.protocol import (
    DEFAULT_MAX_NEW_TOKENS,
    InvalidBody,
    check_sampling,
    lax_int,
    make_jobs,
    parse_body,
    prompt_tokens,
    stream_flag,
)
from sglbench.sim.service import BadRequest, Job, RequestError, ServerFailure, SimService
from sglbench.sim.stream import TextState, collect, stream_sse


def add_routes(app: web.Application, service: SimService) -> None:
    """Register the ``/v1`` routes for ``service``."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response(_models(service))

    async def completions(request: web.Request) -> web.StreamResponse:
        return await _handle(request, service, chat=False)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await _handle(request, service, chat=True)

    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)


def _models(service: SimService) -> dict[str, Any]:
    name = service.args.model_name
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "sglang",
                "root": name,
                "max_model_len": service.engine.profile.model.max_context,
            }
        ],
    }


# Roles of SGLang's ChatCompletionMessageGenericParam (case-insensitive; content optional);
# "user" messages must have content.
_OTHER_ROLES = ("system", "assistant", "tool", "function", "developer", "latest_reminder", "root")


def _message_text(m: Any, i: int) -> tuple[str, str]:
    """Role and text of message ``i``, checked as SGLang's chat message models check them."""
    if not isinstance(m, dict):
        raise InvalidBody(f"messages.{i}: Input should be an object")
    role, content = m.get("role"), m.get("content")
    if not isinstance(role, str):
        raise InvalidBody(f"messages.{i}.role: Field required (a string)")
    if role != "user" and role.lower() not in _OTHER_ROLES:
        allowed = ", ".join(repr(r) for r in ("user", *_OTHER_ROLES))
        raise InvalidBody(f"messages.{i}.role: 'role' must be one of {allowed}")
    if content is None and role == "user":
        raise InvalidBody(f"messages.{i}.content: Field required")
    if isinstance(content, list):  # OpenAI content parts; this model reads text parts only
        if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
            raise InvalidBody(
                f"messages.{i}.content: every part must be a text part"
                ' ({"type": "text", "text": ...}); the simulated model reads text only'
            )
        content = "".join(p["text"] for p in content)
    if content is not None and not isinstance(content, str):
        raise InvalidBody(f"messages.{i}.content: Input should be a string or a list of parts")
    return (role if role == "user" else role.lower()), content or ""


def _chat_prompt(messages: Any) -> str:
    """ChatML text of the messages (Qwen's template), ending with the assistant turn."""
    if not isinstance(messages, list):
        raise InvalidBody("messages: Field required (a list of {role, content} objects)")
    if not messages:
        raise BadRequest("Messages cannot be empty.")
    parts = [_message_text(m, i) for i, m in enumerate(messages)]
    turns = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in parts)
    return turns + "<|im_start|>assistant\n"


def _parse(service: SimService, body: dict[str, Any], chat: bool) -> tuple[list[Job], bool]:
    check_sampling(body, InvalidBody)
    if chat:
        prompts = [service.tokenizer.prompt_ids(_chat_prompt(body.get("messages")))]
        key = (
            "max_completion_tokens"
            if body.get("max_completion_tokens") is not None
            else "max_tokens"
        )
        max_new = lax_int(body, key, DEFAULT_MAX_NEW_TOKENS)
        if max_new < 0:
            raise BadRequest(f"max_new_tokens must be at least 0, got {max_new}.")
    else:
        if body.get("prompt") is None:
            raise InvalidBody("prompt: Field required")
        prompts, _ = prompt_tokens(service, body["prompt"], "prompt", text=True, ids=True)
        max_new = lax_int(body, "max_tokens", 16)  # OpenAI's completions default
        if max_new <= 0:
            raise InvalidBody("max_tokens: Value error, max_tokens must be positive")
    if lax_int(body, "n", 1) != 1:
        raise BadRequest("the simulator supports n=1 only")
    stream = stream_flag(body, InvalidBody)
    return make_jobs(service, body, prompts, [max_new] * len(prompts)), stream


async def _handle(request: web.Request, service: SimService, chat: bool) -> web.StreamResponse:
    try:
        body = parse_body(await request.read())
        jobs, stream = _parse(service, body, chat)
    except BadRequest as exc:
        return openai_error(exc)
    shape = _Shape(service, body, chat, jobs)
    try:
        if stream:
            fmt = OpenAIFormat(jobs, chat, shape.created, shape.model, shape.include_usage)
            return await stream_sse(request, service, jobs, fmt)
        return await _collect(service, jobs, shape)
    finally:
        for job in jobs:
            service.finished(job)


class _Shape:
    """OpenAI response objects for one request (ids, model, usage)."""

    def __init__(
        self, service: SimService, body: dict[str, Any], chat: bool, jobs: list[Job]
    ) -> None:
        self.chat = chat
        self.jobs = jobs
        self.id = jobs[0].rid  # SGLang: the first output's rid
        self.created = int(time.time())
        model = body.get("model")
        self.model = model if isinstance(model, str) else "default"  # SGLang's default name
        self.object = "chat.completion" if chat else "text_completion"
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def usage(self, completion: list[int]) -> dict[str, int]:
        prompt = sum(j.prompt_len for j in self.jobs)
        done = sum(completion)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def final(self, states: list[TextState]) -> dict[str, Any]:
        choices = []
        for i, s in enumerate(states):
            if self.chat:
                message = {
                    "role": "assistant",
                    "content": s.text,
                    "reasoning_content": None,
                    "tool_calls": None,
                }
                choices.append(
                    {
                        "index": i,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "length",
                        "matched_stop": None,
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": s.text,
                        "logprobs": None,
                        "finish_reason": "length",
                        "matched_stop": None,
                    }
                )
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage([len(s.ids) for s in states]),
        }


async def _collect(service: SimService, jobs: list[Job], shape: _Shape) -> web.Response:
    try:
        states = await collect(service, jobs)
    except RequestError as exc:
        return openai_error(exc)
    except EngineStopped as exc:
        return openai_error(ServerFailure(str(exc)))
    return web.json_response(shape.final(states))
