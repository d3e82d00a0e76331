"""A bare livekit-agents voice agent, the baseline of ``bench.agent_latency``: what someone would
write without MediAI, with the same parts MediAI's ``generic`` role runs so the pair compares
the platform, not the settings: the openai plugins' STT, LLM and TTS (the same models, the same
OpenAI-compatible base URL), Silero's VAD loaded once per job process, turns ended by the VAD
with VAD interruptions (services/agent/session.py), no session recording. Otherwise the
library's production defaults, but one warm job process (as MediAI's pool runs), a free HTTP
port, and load counted in jobs as MediAI counts it (services/agent/worker.py): the library's
default load is the machine's CPU, which a shared machine keeps high, and LiveKit then never
offers the worker a job (here, every dispatch after the first consultation was dropped;
livekit/agents #717). It is dispatched by name through LiveKit's ``CreateDispatch``.

LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, OPENAI_API_KEY and OPENAI_BASE_URL come from
the environment. Run: python -m bench.bare_agent (until SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import Agent, AgentServer, AgentSession, AutoSubscribe, JobContext, JobProcess
from livekit.plugins import openai, silero

from bench.bare import run_until_signalled

AGENT_NAME = "bare-agent-bench"
# The models of tests/test_agent_e2e.OPENAI; the language as MediAI gives OpenAI's STT ("pt").
STT, LLM, TTS, LANGUAGE = "gpt-4o-mini-transcribe", "gpt-4o-mini", "gpt-4o-mini-tts", "pt"
INSTRUCTIONS = "Você é um assistente de voz. Responda em português, com frases curtas."


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


server = AgentServer(num_idle_processes=1, port=0, setup_fnc=prewarm, load_threshold=float("inf"))


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    session: AgentSession[None] = AgentSession(
        stt=openai.STT(model=STT, language=LANGUAGE),
        llm=openai.LLM(model=LLM),
        tts=openai.TTS(model=TTS),
        vad=ctx.proc.userdata["vad"],
        turn_handling={"turn_detection": "vad", "interruption": {"enabled": True, "mode": "vad"}},
    )
    await session.start(Agent(instructions=INSTRUCTIONS), room=ctx.room, record=False)


async def main() -> None:
    await run_until_signalled(server)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main())
