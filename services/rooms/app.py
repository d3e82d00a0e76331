"""The rooms service: the tenant's LiveKit control plane (rooms, participants, data messages,
egress, ingress) and the read model of who is where, projected from events only: LiveKit's
webhooks, the service's own actions and its reconciliation's findings."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.di import Provide

from services.rooms import routes_media, routes_participants, routes_rooms
from services.rooms.edges import provide_livekit
from services.rooms.projection import READ_MODEL
from services.rooms.reconcile import reconcile_turn
from shared.background import BackgroundTask, every
from shared.config import Settings
from shared.consumer import Consumer
from shared.http import create_service_app
from shared.idempotency import KEY_PRUNER
from shared.livekit_api import livekit_resource


async def _project(app: Litestar) -> None:
    await Consumer(app.state.bus, READ_MODEL, app.state.pool).run()


async def _reconcile(app: Litestar) -> None:
    await reconcile_turn(app.state.pool, app.state.livekit, app.state.bus.phi)


def _background(settings: Settings) -> list[Any]:
    tasks: list[Any] = [BackgroundTask("read-model", _project), KEY_PRUNER]
    if settings.rooms_reconcile_interval > 0:
        tasks.append(every("reconciler", settings.rooms_reconcile_interval, _reconcile))
    return tasks


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="rooms",
        settings=settings,
        route_handlers=[
            *routes_rooms.HANDLERS,
            *routes_participants.HANDLERS,
            *routes_media.HANDLERS,
        ],
        background=_background(settings),
        resources=[livekit_resource],
        dependencies={"livekit": Provide(provide_livekit, sync_to_thread=False)},
        description="Rooms, participants, data messages, egress and ingress of the caller's "
        "tenant, through LiveKit. Reads answer from a read model projected from events: "
        "LiveKit's webhooks, every action (published as an event, and shown at once), and "
        "what a periodic reconciliation against LiveKit finds the webhooks missed.",
    )
