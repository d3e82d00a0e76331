"""The LiveKit server API client, one per process, owned by the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from livekit import api as lk

from shared.config import Settings

# A LiveKit call that has not answered by then fails (the caller answers 503 or retries).
TIMEOUT_SECONDS = 10


def livekit_api(settings: Settings) -> lk.LiveKitAPI:
    return lk.LiveKitAPI(
        settings.livekit_url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
    )


@contextlib.asynccontextmanager
async def livekit_resource(app: Any) -> AsyncIterator[None]:
    """``app.state.livekit`` for the app's lifetime, shared by its handlers and background
    tasks (``create_service_app(resources=[livekit_resource])``); it owns an HTTP session."""
    app.state.livekit = livekit_api(app.state.settings)
    try:
        yield
    finally:
        await app.state.livekit.aclose()
