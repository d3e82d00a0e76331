"""How fast an agent joins and answers, on the local stack with the OpenAI-compatible stand-in.

Starts the whole stack (the dispatcher runs its worker pool) with the stand-in as the provider,
then, ``--runs`` times: a patient joins a new room, ``POST /v1/agents`` through the gateway, and
the time until the agent is a participant of the room as the patient sees it; then the patient
says a sentence (real speech, tests/data) and the time from the end of the speech to the first
audible frame of the agent's answer. The stand-in answers at once, so the figures are the
platform's own latency (VAD end of turn, STT upload, LLM, TTS, WebRTC), not a model's.

Run: uv run python -m bench.agent_latency [--runs 10]. Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from deploy.stack import Stack
from shared.bus import connect_bus
from tests.standin import OpenAIStandin
from tests.support import stack_settings
from tests.test_agent_e2e import OPENAI, Participant, registered_workers, speech


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    return (
        f"  {name:<36} p50 {statistics.median(ordered):5.2f} s  p90 {p90:5.2f} s  "
        f"min {ordered[0]:5.2f} s  max {ordered[-1]:5.2f} s  (n={len(ordered)})"
    )


async def one_run(api: httpx.AsyncClient, standin: OpenAIStandin) -> tuple[float, float]:
    standin.reset()
    standin.transcript_default("Estou com dor de cabeça desde segunda-feira.")
    standin.chat_default("Entendi. Desde quando a dor começou?")
    room = f"bench-{uuid.uuid4().hex[:8]}"
    patient = await Participant.join(api, room, "patient-bench")
    joined = asyncio.get_running_loop().create_future()

    def on_join(participant: object) -> None:
        if not joined.done():
            joined.set_result(time.monotonic())

    patient.room.on("participant_connected", on_join)
    try:
        asked = time.monotonic()
        response = await api.post("/v1/agents", json={"room": room, "role": "generic", **OPENAI})
        response.raise_for_status()
        join_seconds = await asyncio.wait_for(joined, 30) - asked
        agent = next(iter(patient.room.remote_participants))
        # the agent starts listening once its audio is set up: give it that moment
        await asyncio.sleep(0.5)
        ended = await patient.say(*speech())
        answer_seconds = await patient.wait_for_voice(ended, agent, frames=3) - ended
        await api.delete(f"/v1/agents/{response.json()['id']}")
        return join_seconds, answer_seconds
    finally:
        await patient.leave()


async def main(runs: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    with OpenAIStandin() as standin:
        settings = stack_settings(
            data_dir, openai_base_url=standin.base_url, openai_api_key="bench"
        )
        stack = Stack(settings)
        state = await stack.start()
        try:
            bus = await connect_bus(settings, "bench", streams="create")
            began = time.monotonic()
            await registered_workers(bus)
            print(
                f"stack ready; first agent worker registered {time.monotonic() - began:.1f}s "
                "after that"
            )
            await bus.close()
            joins, answers = [], []
            async with httpx.AsyncClient(
                base_url=state.gateway_url,
                timeout=30,
                headers={"Authorization": f"Bearer {state.dev_api_key}"},
            ) as api:
                for run in range(runs):
                    join_seconds, answer_seconds = await one_run(api, standin)
                    joins.append(join_seconds)
                    answers.append(answer_seconds)
                    print(
                        f"  run {run + 1:>2}: joined {join_seconds:5.2f} s, "
                        f"answered {answer_seconds:5.2f} s after the end of speech"
                    )
            print("agents on the local stack, stand-in provider:")
            print(summary("POST /v1/agents -> agent in the room", joins))
            print(summary("end of speech -> first agent audio", answers))
        finally:
            await stack.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(main(parser.parse_args().runs))
