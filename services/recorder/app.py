"""The recorder: no public API, only health on HTTP; it records consultations' audio for the
``recorder`` egress backend (docs/recording.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar

from services.recorder.consumers import RECORDER
from services.recorder.recordings import Recordings
from shared.background import BackgroundTask
from shared.config import Settings
from shared.consumer import Consumer
from shared.http import create_service_app


async def _consume(app: Litestar) -> None:
    await Consumer(app.state.bus, RECORDER, app.state.recordings).run()


def create_app(settings: Settings) -> Litestar:
    @contextlib.asynccontextmanager
    async def recordings(app: Litestar) -> AsyncIterator[None]:
        app.state.recordings = Recordings(app.state.bus, settings)
        try:
            yield
        finally:
            await app.state.recordings.close()

    return create_service_app(
        service="recorder",
        settings=settings,
        route_handlers=[],
        resources=[recordings],
        background=[BackgroundTask(RECORDER.durable, _consume)],
        description="Records consultations' audio after the patient's consent, for the "
        "recorder egress backend (docs/recording.md). No public API.",
    )
