"""The rooms service: the tenant's LiveKit control plane (rooms, participants, data messages,
egress, ingress) and the read model of who is where, projected from the webhook events."""

from __future__ import annotations

import asyncio
import contextlib

from litestar import Litestar
from litestar.di import Provide

from services.rooms import routes_media, routes_participants, routes_rooms
from services.rooms.edges import livekit_of, provide_livekit
from services.rooms.projection import READ_MODEL, handler
from services.rooms.reconcile import run_reconciler
from shared.bus import Consumer
from shared.config import Settings
from shared.http import create_service_app
from shared.idempotency import prune_idempotency_keys


async def _project(app: Litestar) -> None:
    await Consumer(app.state.bus, READ_MODEL, handler(app.state.pool)).run()


async def _reconcile(app: Litestar) -> None:
    """Reconcile for the app's lifetime, then close the LiveKit client (it owns a session)."""
    settings: Settings = app.state.settings
    api = livekit_of(app.state)
    try:
        if settings.rooms_reconcile_interval > 0:
            await run_reconciler(app.state.pool, api, settings.rooms_reconcile_interval)
        else:
            await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await api.aclose()


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="rooms",
        settings=settings,
        route_handlers=[
            *routes_rooms.HANDLERS,
            *routes_participants.HANDLERS,
            *routes_media.HANDLERS,
        ],
        background=[_project, _reconcile, prune_idempotency_keys],
        dependencies={"livekit": Provide(provide_livekit)},
        description="Rooms, participants, data messages, egress and ingress of the caller's "
        "tenant, through LiveKit. Reads answer from a read model kept by LiveKit's webhooks "
        "and reconciled against LiveKit; every action is published as an event.",
    )
