"""The recorder's consumer: egress requests for its backend, stop requests and the patients'
consent decisions, in log order, each handed to ``core`` through ``Recordings``."""

from __future__ import annotations

from services.recorder import core
from services.recorder.recordings import Recordings
from shared.consumer import ConsumerSpec, Delivery, data_of
from shared.events import Envelope
from shared.events.clinical import ConsentGiven, ConsentRefused
from shared.events.rooms import EgressRequested, EgressStopRequested

BACKEND = "recorder"


async def on_requested(recordings: Recordings, event: Envelope, _: Delivery) -> None:
    data = data_of(event, EgressRequested)
    if data.backend != BACKEND:
        return
    request = core.Request(data.egress_id, event.tenant, data.room, event.time)
    await recordings.decide(event.tenant, data.room, lambda s: core.requested(s, request))


async def on_stop_requested(recordings: Recordings, event: Envelope, _: Delivery) -> None:
    data = data_of(event, EgressStopRequested)
    await recordings.decide(
        event.tenant, data.room, lambda s: core.stop_requested(s, data.egress_id)
    )


async def on_consent_given(recordings: Recordings, event: Envelope, _: Delivery) -> None:
    data = data_of(event, ConsentGiven)
    await recordings.decide(event.tenant, data.room, lambda s: core.consent_given(s, data))


async def on_consent_refused(recordings: Recordings, event: Envelope, _: Delivery) -> None:
    data = data_of(event, ConsentRefused)
    await recordings.decide(event.tenant, data.room, lambda s: core.consent_refused(s, data))


RECORDER: ConsumerSpec[Recordings] = ConsumerSpec(
    durable="recorder",
    handlers={
        EgressRequested: on_requested,
        EgressStopRequested: on_stop_requested,
        ConsentGiven: on_consent_given,
        ConsentRefused: on_consent_refused,
    },
)
