"""The key service: no public API, only health on HTTP; it answers key requests on NATS, learns
live dispatches from the log, and destroys clinical keys whose retention ended."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from litestar import Litestar

from services.keys.dispatches import DISPATCHES
from services.keys.kek import KekError, LocalKeyring
from services.keys.rpc import serve_requests
from services.keys.service import KeyService
from shared.background import BackgroundTask, every
from shared.config import ConfigError, Settings
from shared.consumer import Consumer
from shared.http import create_service_app

RETENTION_SWEEP_SECONDS = 3600.0


async def _dispatches(app: Litestar) -> None:
    await Consumer(app.state.bus, DISPATCHES, app.state.pool).run()


async def _expire_clinical(app: Litestar) -> None:
    service: KeyService = app.state.key_service
    await service.expire_clinical(app.state.settings.clinical_retention, datetime.now(UTC))


def create_app(settings: Settings) -> Litestar:
    try:
        keyring = LocalKeyring.load(settings)
    except KekError as error:
        raise ConfigError(str(error)) from None

    @contextlib.asynccontextmanager
    async def key_service(app: Litestar) -> AsyncIterator[None]:
        app.state.key_service = KeyService(app.state.pool, keyring)
        yield

    return create_service_app(
        service="keys",
        settings=settings,
        route_handlers=[],
        resources=[key_service],
        background=[
            serve_requests,
            BackgroundTask(DISPATCHES.durable, _dispatches),
            every("clinical-retention", RETENTION_SWEEP_SECONDS, _expire_clinical),
        ],
        description="Holds the key-encryption key and hands out data keys over NATS "
        "(docs/privacy.md). No public API.",
    )
