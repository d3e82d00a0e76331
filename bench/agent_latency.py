"""How fast an agent joins and answers, MediAI against a bare livekit-agents voice agent on the
same LiveKit server, the same stand-in provider and the same speech, in the same run.

Starts the stack (token, dispatcher and its worker pool) with the OpenAI-compatible stand-in as
the provider (its own process), and bench/bare_agent.py beside it (the same plugins, VAD and
turn settings, dispatched with LiveKit's ``CreateDispatch``). Then ``--runs`` times, one MediAI
and one bare consultation, the order alternating (bench/consultation.py): a patient joins a new
room, the agent is dispatched, the time until the patient sees it in the room; the patient says
a sentence (real speech, tests/data), the time from the end of the speech to the first audible
frames of the answer. The stand-in answers at once, so the figures are the platform's own
latency (VAD end of turn, STT upload, LLM, TTS, WebRTC), not a model's.

Run: uv run python -m bench.agent_latency [--runs 10]. Prints both sides and the ratio, writes
bench/results/agent_latency.json; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio

from livekit import api as lk

from bench.agentstack import agent_stack, bare_agent, line, load_average, stats, write_record
from bench.consultation import Bare, MediAI, Outcome, Side, consult
from shared.livekit_api import livekit_api

MEASURES = {"join": "dispatch -> agent in the room", "answer": "end of speech -> first audio"}


def samples(outcomes: list[Outcome], measure: str) -> list[float]:
    if measure == "join":
        return [o.join_seconds for o in outcomes if o.join_seconds is not None]
    return [a for o in outcomes for a in o.answers]


async def main(runs: int) -> None:
    outcomes: dict[str, list[Outcome]] = {"mediai": [], "bare": []}
    loads = [load_average()]
    async with agent_stack() as stack, bare_agent(stack) as agent_name:
        livekit: lk.LiveKitAPI = livekit_api(stack.settings)
        sides: list[Side] = [MediAI(stack.api), Bare(livekit, agent_name)]
        try:
            for side in sides:  # a warm-up each: the first job of a worker pays for imports
                await consult(stack.api, side)
            for run in range(runs):
                for side in sides if run % 2 == 0 else sides[::-1]:
                    outcome = await consult(stack.api, side)
                    outcomes[side.name].append(outcome)
                    loads.append(load_average())
                    joined = f"{outcome.join_seconds:5.2f} s" if outcome.join_seconds else "  -  "
                    answered = f"{outcome.answers[0]:5.2f} s" if outcome.answers else "  -  "
                    print(
                        f"  run {run + 1:>2} {side.name:<6}: joined {joined}, answered "
                        f"{answered} ({outcome.status})",
                        flush=True,
                    )
        finally:
            await livekit.aclose()
    record: dict[str, object] = {"runs": runs, "load_average": [min(loads), max(loads)]}
    print(f"\nagents, {runs} interleaved runs each, stand-in provider")
    print(f"(load average {min(loads):.1f}-{max(loads):.1f})")
    for measure, title in MEASURES.items():
        figures = {name: stats(samples(found, measure)) for name, found in outcomes.items()}
        print(f"{title}:")
        print(line("MediAI (POST /v1/agents)", figures["mediai"]))
        print(line("bare livekit-agents (CreateDispatch)", figures["bare"]))
        ratio = None
        if figures["mediai"].get("n") and figures["bare"].get("n"):
            ratio = round(float(figures["mediai"]["p50"]) / float(figures["bare"]["p50"]), 3)
            print(f"  ratio MediAI / bare (p50): x{ratio:.2f}")
        record[measure] = {**figures, "ratio_p50": ratio}
    failed = {n: sum(o.status != "answered" for o in found) for n, found in outcomes.items()}
    record["not_answered"] = failed
    if any(failed.values()):
        print(f"runs without an agent or an answer: {failed}")
    print(f"record: {write_record('agent_latency', record)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(main(parser.parse_args().runs))
