"""The pool service: runs this host's agent workers (``services.pool.workers``); health only on
HTTP. Its /readyz says ready once one of its workers is registered with LiveKit."""

from __future__ import annotations

from litestar import Litestar

from services.pool.workers import WorkerPool
from shared.background import BackgroundTask
from shared.config import Settings
from shared.http import create_service_app


def create_app(settings: Settings) -> Litestar:
    workers = WorkerPool(settings)

    async def run(app: Litestar) -> None:
        await workers.run(app.state.bus, app.state.pool)

    return create_service_app(
        service="pool",
        settings=settings,
        route_handlers=[],
        background=[BackgroundTask("worker-pool", run)],
        description="The agent workers of one host: started, scaled on their load, restarted "
        "and drained. No public API.",
    )
