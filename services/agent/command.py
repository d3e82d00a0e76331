"""The ``mediai agent-worker`` command: run one agent worker process in the foreground.

The pool service starts workers with it; an orchestrator (a Kubernetes Deployment) can run
it the same way (see docs/agents.md). The heavy livekit-agents imports happen only when it runs;
``python -m services.agent`` runs the same command without importing the ``mediai`` command's
other modules first (the pool starts workers that way: seconds sooner).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import NoReturn

import click


@click.command("agent-worker")
@click.option(
    "--worker-id",
    envvar="MEDIAI_AGENT_WORKER_ID",
    default="",
    help="This worker's id in the pool (events are keyed by it).",
)
@click.option(
    "--http-port",
    type=int,
    default=0,
    show_default=True,
    envvar="MEDIAI_AGENT_HEALTH_PORT",
    help="Health and load endpoint (GET / and /worker); 0 picks a free port.",
)
@click.option(
    "--prometheus-port",
    type=int,
    default=None,
    envvar="MEDIAI_AGENT_PROMETHEUS_PORT",
    help="Serve livekit-agents' Prometheus metrics (worker load, active jobs) here.",
)
def agent_worker(worker_id: str, http_port: int, prometheus_port: int | None) -> None:
    """Run one agent worker (livekit-agents) registered with LiveKit, until SIGTERM."""
    from shared.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as error:
        _fail(f"configuration: {error}", code=2)
    # Nothing outside the package registries is reachable: models ship inside the wheels.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from services.agent.startup import WORKER_ID_VARIABLE, start_forkserver

    if worker_id:
        os.environ[WORKER_ID_VARIABLE] = worker_id
    # First, so the job processes' preload runs while this process imports livekit-agents.
    start_forkserver(settings)
    from services.agent.tracing import install_tracing
    from services.agent.worker import WorkerStartError, run_worker

    install_tracing(settings)
    logging.getLogger("livekit").setLevel(settings.log_level)
    # The pool polls GET /worker twice a second; one access line per poll is only noise.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        asyncio.run(run_worker(settings, http_port=http_port, prometheus_port=prometheus_port))
    except WorkerStartError as error:
        _fail(f"agent worker: {error}")
    except RuntimeError as error:
        # livekit-agents raises RuntimeError when LiveKit stays unreachable after its retries.
        _fail(f"agent worker: {error}")


def _fail(message: str, code: int = 1) -> NoReturn:
    # The mediai command's own (one clear line), imported only now: loading the command's
    # other modules first would delay the worker's start by seconds.
    from deploy.cli import fail

    fail(message, code)
