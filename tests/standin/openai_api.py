"""The OpenAI stand-in's ASGI app: OpenAI's real wire format, answers from a `Script`.

livekit-plugins-openai (LLM, STT, TTS) pointed at this app runs its production code path: the
openai SDK sends the same requests it would send to api.openai.com. Endpoints:

  POST /v1/chat/completions    streaming (SSE, tool calls, stream_options.include_usage) or not
  POST /v1/audio/transcriptions multipart upload; json / verbose_json / text answers
  POST /v1/audio/speech        a tone in the requested response_format, raw or SSE (stream_format)
  GET  /v1/models              what LLM.prewarm() lists
  POST /_standin/script, GET /_standin/requests, POST /_standin/reset: scripting over HTTP, for a
  stand-in running in another process (`python -m tests.standin.openai_server --port N`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.response import Stream

from . import audio
from .script import ChatRule, Script, ToolCall

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header"
    " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
LANGUAGE_NAMES = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian"}


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    # OpenAI's error envelope; the SDK turns it into openai.APIStatusError with .body = error
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Response(body, status_code=status)


def _script(request: Request) -> Script:
    return request.app.state.script  # type: ignore[no-any-return]


async def _require_key(request: Request) -> Response | None:
    """Any bearer token is accepted; none at all is rejected the way OpenAI does."""
    if request.url.path.startswith("/_standin"):
        return None
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        return _error(401, MISSING_KEY)
    return None


async def _add_request_id(response: Response) -> Response:
    # the SDK reads x-request-id (livekit's TTS warns when it is missing, as it logs it)
    response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
    return response


def _on_http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:  # unknown route: OpenAI says "Invalid URL"
        return _error(404, f"Invalid URL ({request.method} {request.url.path})")
    return _error(exc.status_code, str(exc.detail))


def _on_crash(request: Request, exc: Exception) -> Response:
    return _error(500, f"stand-in failure: {exc!r}", kind="server_error")


# -- chat completions -----------------------------------------------------------------------


def _usage(rule: ChatRule, messages: list[Any]) -> dict[str, Any]:
    # estimated like a tokenizer would, ~4 characters a token, unless the rule says otherwise
    answer = (rule.text or "") + "".join(c.name + c.arguments_json() for c in rule.tool_calls)
    given = rule.usage or {}
    prompt = given.get("prompt_tokens", max(1, len(json.dumps(messages)) // 4))
    completion = given.get("completion_tokens", max(1, len(answer) // 4))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": given.get("cached_tokens", 0),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _text_pieces(text: str) -> list[str]:
    """A few words per chunk, so clients see a real stream of several deltas."""
    words = re.findall(r"\s*\S+", text)
    return ["".join(words[i : i + 3]) for i in range(0, len(words), 3)] or [text]


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """The calls as OpenAI's message.tool_calls, each with a fresh call id."""
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments_json()},
        }
        for c in calls
    ]


def _tool_call_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Like OpenAI: first the call's id and name with empty arguments, then argument pieces."""
    deltas: list[dict[str, Any]] = []
    for i, call in enumerate(_tool_calls(calls)):
        name, args = call["function"]["name"], call["function"]["arguments"]
        head = {"index": i, "id": call["id"], "type": "function"}
        deltas.append({**head, "function": {"name": name, "arguments": ""}})
        half = len(args) // 2
        deltas += [{"index": i, "function": {"arguments": p}} for p in (args[:half], args[half:])]
    return deltas


async def _chat_stream(
    rule: ChatRule, model: str, usage: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_standin",
    }
    if include_usage:  # OpenAI then sends "usage": null on every chunk but the last
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _text_pieces(rule.text) if rule.text else []:
        yield chunk({"content": piece})
    for delta in _tool_call_deltas(rule.tool_calls):
        yield chunk({"tool_calls": [delta]})
    yield chunk({}, "tool_calls" if rule.tool_calls else "stop")
    if include_usage:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def _chat_completion(rule: ChatRule, model: str, usage: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": rule.text, "refusal": None}
    if rule.tool_calls:
        message["tool_calls"] = _tool_calls(rule.tool_calls)
    finish = "tool_calls" if rule.tool_calls else "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request) -> Response | Stream:
    body = await request.json()
    messages = body.get("messages") or []
    rule = _script(request).chat_answer(messages)
    reply = {
        "text": rule.text,
        "tool_calls": [[c.name, c.arguments_json()] for c in rule.tool_calls],
    }
    _script(request).record("chat", request.url.path, body, reply=reply)
    if rule.delay:  # before the headers, like a model thinking before its first token
        await asyncio.sleep(rule.delay)
    if rule.error:
        return _error(rule.error.get("status", 500), rule.error.get("message", "scripted error"))
    usage = _usage(rule, messages)
    model = body.get("model", "")
    if not body.get("stream"):
        return Response(_chat_completion(rule, model, usage))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = _chat_stream(rule, model, usage, include_usage)
    return Stream(events, media_type="text/event-stream")


# -- audio ----------------------------------------------------------------------------------


def _form_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in items:  # repeated keys (e.g. "languages[]") become lists
        if key in fields:
            prev = fields[key]
            fields[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            fields[key] = value
    return fields


@post("/v1/audio/transcriptions", status_code=200)
async def transcriptions(request: Request) -> Response:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return _error(400, "you must provide a 'file' field")
    data = await upload.read()
    fields = _form_fields([(k, v) for k, v in form.multi_items() if k != "file"])
    info = {"filename": upload.filename, "content_type": upload.content_type}
    info |= audio.describe_upload(data)
    text = _script(request).next_transcript()
    reply = {"text": text}
    _script(request).record("transcription", request.url.path, fields, audio=info, reply=reply)

    seconds = info.get("duration", 0.0)
    fmt = fields.get("response_format", "json")
    if fmt in ("text", "srt", "vtt"):
        return Response(text + "\n", media_type="text/plain")
    if fmt == "verbose_json":  # whisper-1 only: language, duration and segments
        language = LANGUAGE_NAMES.get(fields.get("language", "en"), "english")
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text, "tokens": []}
        usage = {"type": "duration", "seconds": math.ceil(seconds)}
        verbose = {"task": "transcribe", "language": language, "duration": seconds, "text": text}
        return Response({**verbose, "segments": [segment], "usage": usage})
    if fields.get("model") == "whisper-1":  # billed by the second; the gpt-4o models by token
        return Response(
            {"text": text, "usage": {"type": "duration", "seconds": math.ceil(seconds)}}
        )
    audio_tokens, text_tokens = int(seconds * 10) + 1, len(text) // 4 + 1
    usage = {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": text_tokens,
        "total_tokens": audio_tokens + text_tokens,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
    }
    return Response({"text": text, "usage": usage})


@post("/v1/audio/speech", status_code=200)
async def speech(request: Request) -> Response | Stream:
    body = await request.json()
    fmt = body.get("response_format", "mp3")
    if fmt not in audio.FORMATS:
        return _error(400, f"Invalid value: '{fmt}'. Supported values are: {list(audio.FORMATS)}")
    text = body.get("input", "")
    seconds = audio.speech_seconds(text, float(body.get("speed", 1.0)))
    data = await asyncio.to_thread(audio.encode, audio.tone(seconds), fmt)
    reply = {"seconds": seconds, "format": fmt, "bytes": len(data)}
    _script(request).record("speech", request.url.path, body, reply=reply)
    pieces = [data[i : i + 4800] for i in range(0, len(data), 4800)]  # ~0.1 s of pcm each

    if body.get("stream_format") != "sse":  # the audio file itself, in chunks
        return Stream(pieces, media_type=audio.FORMATS[fmt][0])

    async def events() -> AsyncIterator[str]:
        for piece in pieces:
            delta = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
            yield f"data: {json.dumps(delta)}\n\n"
        tokens_in, tokens_out = len(text) // 4 + 1, int(seconds * 20) + 1
        usage = {"input_tokens": tokens_in, "output_tokens": tokens_out}
        usage["total_tokens"] = tokens_in + tokens_out
        yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n"

    return Stream(events(), media_type="text/event-stream")


@get("/v1/models")
async def models() -> dict[str, Any]:
    names = ["gpt-4o-mini", "gpt-4.1", "gpt-4o-mini-transcribe", "whisper-1", "gpt-4o-mini-tts"]
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "standin"} for n in names]
    return {"object": "list", "data": data}


# -- scripting over HTTP --------------------------------------------------------------------


@post("/_standin/script", status_code=200)
async def admin_script(request: Request) -> dict[str, Any]:
    _script(request).apply(await request.json())
    return {"ok": True}


@get("/_standin/requests")
async def admin_requests(request: Request) -> dict[str, Any]:
    return {"requests": _script(request).requests(request.query_params.get("kind"))}


@post("/_standin/reset", status_code=200)
async def admin_reset(request: Request) -> dict[str, Any]:
    _script(request).reset()
    return {"ok": True}


def create_app(script: Script) -> Litestar:
    openai_routes = [chat_completions, transcriptions, speech, models]
    app = Litestar(
        [*openai_routes, admin_script, admin_requests, admin_reset],
        before_request=_require_key,
        after_request=_add_request_id,
        exception_handlers={HTTPException: _on_http_error, Exception: _on_crash},
        request_max_body_size=200_000_000,  # minutes of WAV in one transcription upload
    )
    app.state.script = script
    return app
