"""The OpenAI stand-in drives the REAL livekit-plugins-openai classes (their production code path,
only base_url differs), so tests built on it exercise what runs against api.openai.com."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectOptions,
    APIStatusError,
    function_tool,
    llm,
)
from livekit.plugins import openai

from tests.standin import OpenAIStandin
from tests.standin.audio import speech_seconds
from tests.standin.script import ChatRule, Script, Turn

AUTH = {"Authorization": "Bearer test"}


@pytest.fixture(scope="module")
def standin() -> Iterator[OpenAIStandin]:
    with OpenAIStandin() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(standin: OpenAIStandin) -> None:
    standin.reset()


@function_tool
async def book_appointment(day: str, time: str) -> str:
    """Book an appointment with the doctor.

    Args:
        day: the day of the week
        time: the time, HH:MM
    """
    return f"booked {day} {time}"


def _llm(standin: OpenAIStandin) -> openai.LLM:
    return openai.LLM(base_url=standin.base_url, api_key="test", model="gpt-4o-mini")


async def _complete(model: llm.LLM, ctx: llm.ChatContext, tools: list | None = None):
    texts, calls, usage = [], [], None
    async with model.chat(chat_ctx=ctx, tools=tools or []) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                texts.append(chunk.delta.content)
            if chunk.delta and chunk.delta.tool_calls:
                calls.extend(chunk.delta.tool_calls)
            usage = chunk.usage or usage
    return texts, calls, usage


def _tone_frame(seconds: float, rate: int = 48_000) -> rtc.AudioFrame:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))


def test_rules_match_in_order_and_tool_follow_ups_are_separate() -> None:
    script = Script()
    script.add_chat(ChatRule(match="BOOK", text="first", once=True))
    script.add_chat(ChatRule(match="book", system="scribe", text="scribe"))
    script.add_chat(ChatRule(after_tool="book_appointment", text="after tool"))
    user = [
        {"role": "system", "content": "You are the scribe"},
        {"role": "user", "content": "book"},
    ]
    assert script.chat_answer(user).text == "first"
    assert script.chat_answer(user).text == "scribe"  # the "once" rule was consumed
    call = {"id": "c1", "type": "function", "function": {"name": "book_appointment"}}
    tool_turn = [*user, {"role": "assistant", "tool_calls": [call]}]
    tool_turn.append({"role": "tool", "tool_call_id": "c1", "content": "ok"})
    assert Turn.from_messages(tool_turn).tool_name == "book_appointment"
    assert script.chat_answer(tool_turn).text == "after tool"
    assert script.chat_answer([{"role": "user", "content": "hi"}]).text == script._chat_default


async def test_llm_streams_scripted_text_and_usage(standin: OpenAIStandin) -> None:
    standin.chat("headache", text="Please describe the pain and when it started, if you can.")
    standin.chat("headache", text="never reached")  # first match wins
    standin.chat("x", text="x", usage={"prompt_tokens": 120, "completion_tokens": 7})
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a triage nurse.")
    ctx.add_message(role="user", content="I have a HEADACHE")
    async with _llm(standin) as model:
        texts, calls, usage = await _complete(model, ctx)

    assert "".join(texts) == "Please describe the pain and when it started, if you can."
    assert len(texts) > 2  # really streamed
    assert not calls
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    body = standin.requests("chat")[0]["body"]
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1] == {"role": "user", "content": "I have a HEADACHE"}


async def test_llm_tool_call_then_answer_from_its_result(standin: OpenAIStandin) -> None:
    args = {"day": "monday", "time": "09:30"}
    standin.chat("appointment", tool_calls=[("book_appointment", args)], usage={"cached_tokens": 5})
    standin.chat(after_tool="book_appointment", text="You are booked for Monday at 9:30.")
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="I need an appointment")
    async with _llm(standin) as model:
        _, calls, usage = await _complete(model, ctx, [book_appointment])
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("book_appointment", args)]
        assert usage is not None
        assert usage.prompt_cached_tokens == 5

        call = calls[0]
        ctx.insert(llm.FunctionCall(call_id=call.call_id, name=call.name, arguments=call.arguments))
        ctx.insert(
            llm.FunctionCallOutput(
                call_id=call.call_id, name=call.name, output="booked", is_error=False
            )
        )
        texts, calls, _ = await _complete(model, ctx, [book_appointment])
    assert "".join(texts) == "You are booked for Monday at 9:30."
    assert not calls
    first, follow_up = standin.requests("chat")
    assert [t["function"]["name"] for t in first["body"]["tools"]] == ["book_appointment"]
    assert follow_up["body"]["messages"][-1]["role"] == "tool"


@pytest.mark.parametrize("model", ["gpt-4o-mini-transcribe", "whisper-1"])
async def test_stt_recognizes_scripted_transcript_and_records_audio(
    standin: OpenAIStandin, model: str
) -> None:
    standin.transcripts("I have had a headache since Monday.", "Second answer.")
    stt = openai.STT(base_url=standin.base_url, api_key="test", model=model, language="en")
    first = await stt.recognize(_tone_frame(1.5))
    second = await stt.recognize(_tone_frame(0.5))
    third = await stt.recognize(_tone_frame(0.5))

    texts = [e.alternatives[0].text for e in (first, second, third)]
    assert texts == ["I have had a headache since Monday.", "Second answer.", "Hello."]
    request = standin.requests("transcription")[0]
    assert request["body"]["model"] == model
    assert request["body"]["language"] == "en"
    audio = request["audio"]  # what really arrived: a 1.5 s, 48 kHz, non-silent WAV
    assert (audio["sample_rate"], audio["channels"]) == (48_000, 1)
    assert audio["duration"] == pytest.approx(1.5)
    assert audio["rms"] > 1000


@pytest.mark.parametrize(
    ("model", "response_format"),
    [("gpt-4o-mini-tts", None), ("gpt-4o-mini-tts", "pcm"), ("tts-1", "wav"), ("tts-1", "opus")],
)
async def test_tts_synthesizes_real_audio(
    standin: OpenAIStandin, model: str, response_format: str | None
) -> None:
    text = "Your appointment is on Monday."
    fmt = {"response_format": response_format} if response_format else {}
    tts = openai.TTS(base_url=standin.base_url, api_key="test", model=model, **fmt)
    async with tts, tts.synthesize(text) as stream:
        frames = [ev.frame async for ev in stream]

    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert {f.sample_rate for f in frames} == {24_000}
    assert len(pcm) / 24_000 == pytest.approx(speech_seconds(text), abs=0.1)
    assert np.abs(pcm).max() > 5000  # a tone, not silence
    body = standin.requests("speech")[0]["body"]
    # gpt-4o-mini-tts is asked for SSE, tts-1 for raw audio; mp3 when nothing is set
    assert body["stream_format"] == ("audio" if model == "tts-1" else "sse")
    assert body["response_format"] == (response_format or "mp3")


class Receptionist(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You book appointments.", tools=[book_appointment])


async def test_agent_session_run_with_scripted_model(standin: OpenAIStandin) -> None:
    standin.chat("hello", text="Hello, how can I help?")
    standin.chat("monday", tool_calls=[("book_appointment", {"day": "monday", "time": "10:00"})])
    standin.chat(after_tool="book_appointment", text="Booked: Monday 10:00.")
    async with _llm(standin) as model, AgentSession(llm=model) as session:
        await session.start(Receptionist())
        result = await session.run(user_input="Hello")
        result.expect.next_event().is_message(role="assistant")
        assert result.expect[0].event().item.text_content == "Hello, how can I help?"
        result.expect.no_more_events()

        result = await session.run(user_input="Book me on Monday at ten")
        result.expect.next_event().is_function_call(
            name="book_appointment", arguments={"day": "monday"}
        )
        result.expect.next_event().is_function_call_output(output="booked monday 10:00")
        message = result.expect.next_event().is_message(role="assistant")
        assert message.event().item.text_content == "Booked: Monday 10:00."
        result.expect.no_more_events()


async def test_scripted_error_reaches_the_plugin_as_openai_error(standin: OpenAIStandin) -> None:
    standin.chat("busy", error={"status": 503, "message": "The engine is overloaded"})
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="are you busy?")
    async with _llm(standin) as model:
        stream = model.chat(chat_ctx=ctx, conn_options=APIConnectOptions(max_retry=0))
        with pytest.raises(APIStatusError) as failure:
            await stream.collect()
    assert failure.value.status_code == 503
    assert "overloaded" in failure.value.message


async def test_missing_key_is_rejected_like_openai(standin: OpenAIStandin) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{standin.base_url}/chat/completions", json={"messages": []})
    assert resp.status_code == 401
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_scripting_over_http(standin: OpenAIStandin) -> None:
    script = {
        "chat": [{"match": "pain", "text": "Where does it hurt?", "once": True}],
        "chat_default": "Could you repeat that?",
        "transcripts": ["It hurts here."],
    }
    async with httpx.AsyncClient(base_url=standin.url) as admin:
        assert (await admin.post("/_standin/script", json=script)).json() == {"ok": True}
        answers = []
        async with _llm(standin) as model:
            for _ in range(2):
                ctx = llm.ChatContext.empty()
                ctx.add_message(role="user", content="I am in pain")
                texts, _, _ = await _complete(model, ctx)
                answers.append("".join(texts))
        assert answers == ["Where does it hurt?", "Could you repeat that?"]
        recorded = (await admin.get("/_standin/requests", params={"kind": "chat"})).json()
        assert [r["reply"]["text"] for r in recorded["requests"]] == answers
        assert recorded["requests"][0]["body"]["model"] == "gpt-4o-mini"
        await admin.post("/_standin/reset")
        assert (await admin.get("/_standin/requests")).json() == {"requests": []}


def test_runs_as_a_process() -> None:
    cmd = [sys.executable, "-m", "tests.standin.openai_server", "--port", "0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().split()[-1]
            resp = httpx.get(f"{base_url}/models", headers=AUTH, timeout=10)
            assert resp.status_code == 200
            assert resp.json()["object"] == "list"
        finally:
            proc.terminate()
