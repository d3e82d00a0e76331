"""A bare livekit-agents worker, the baseline of ``bench.worker_cold_start``: what someone would
write without MediAI. One ``AgentServer`` with an agent name and an entrypoint that joins the
room, the library's production defaults except one warm job process (as MediAI's pool runs)
and a free HTTP port (several run side by side). LIVEKIT_URL, LIVEKIT_API_KEY and
LIVEKIT_API_SECRET come from the environment.

Run: python -m bench.bare_worker (until SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging

from livekit.agents import AgentServer, JobContext

from bench.bare import run_until_signalled

server = AgentServer(num_idle_processes=1, port=0)


@server.rtc_session(agent_name="bare-bench")
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()


async def main() -> None:
    await run_until_signalled(server)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
