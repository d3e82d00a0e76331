"""The scheduling service's wiring: HTTP routes, the agents' request/reply endpoint, consumers."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide

from services.scheduling.anamnesis import ANAMNESIS_ROUTES, run_anamnesis_consumer
from services.scheduling.dispatches import run_dispatches_consumer
from services.scheduling.patients.consumers import CONSUMERS as PATIENTS_CONSUMERS
from services.scheduling.patients.erasure import RESUMER
from services.scheduling.patients.routes import ROUTES as PATIENTS_ROUTES
from services.scheduling.routes import ROUTES
from services.scheduling.rpc import serve_requests
from shared.access import provide_reader
from shared.config import Settings
from shared.http import create_service_app
from shared.idempotency import KEY_PRUNER


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="scheduling",
        settings=settings,
        route_handlers=[*ROUTES, *ANAMNESIS_ROUTES, *PATIENTS_ROUTES],
        background=[
            serve_requests,
            run_anamnesis_consumer,
            run_dispatches_consumer,
            KEY_PRUNER,
            *PATIENTS_CONSUMERS,
            RESUMER,
        ],
        dependencies={"reader": Provide(provide_reader("scheduling"), sync_to_thread=False)},
        description=(
            "Doctors and their weekly schedules, free slots, appointments (no double booking), "
            "the anamnesis records made by the intake agent, and the patients' rights: erasure "
            "with its certificate, the export of a patient's data, and the access log "
            "(docs/privacy.md). Agents reach the scheduling operations over NATS request/reply "
            "(shared.scheduling_api)."
        ),
    )
