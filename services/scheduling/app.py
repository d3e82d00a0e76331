"""The scheduling service's wiring: HTTP routes, the agents' request/reply endpoint, consumers."""

from __future__ import annotations

from litestar import Litestar

from services.scheduling.anamnesis import ANAMNESIS_ROUTES, run_anamnesis_consumer
from services.scheduling.dispatches import run_dispatches_consumer
from services.scheduling.routes import ROUTES
from services.scheduling.rpc import serve_requests
from shared.config import Settings
from shared.http import create_service_app
from shared.idempotency import KEY_PRUNER


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="scheduling",
        settings=settings,
        route_handlers=[*ROUTES, *ANAMNESIS_ROUTES],
        background=[serve_requests, run_anamnesis_consumer, run_dispatches_consumer, KEY_PRUNER],
        description=(
            "Doctors and their weekly schedules, free slots, appointments (no double booking), "
            "and the anamnesis records made by the intake agent. Agents reach the same "
            "operations over NATS request/reply (shared.scheduling_api)."
        ),
    )
