"""The token service through the gateway, with the real LiveKit server accepting the token."""

from __future__ import annotations

import httpx
import pytest
from livekit import api as livekit_api
from livekit import rtc

from deploy.stack import StackState
from shared.bus import Bus
from shared.events import TokenIssued
from shared.events.rooms import ParticipantJoined
from tests.support import watch

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_token_is_scoped_to_the_tenants_room_and_livekit_accepts_it(
    api: httpx.AsyncClient, stack: StackState, bus: Bus
) -> None:
    async with watch(bus, TokenIssued) as issued:
        response = await api.post(
            "/v1/tokens",
            json={
                "room": "consult-1",
                "identity": "patient-1",
                "name": "Paciente",
                "canPublish": True,
                "canSubscribe": True,
                "ttl": "2h",
            },
            headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["wsUrl"] == stack.livekit_url

        claims = livekit_api.TokenVerifier(stack.livekit_api_key, stack.livekit_api_secret).verify(
            body["token"]
        )
        tenant_id = (await issued.next()).tenant
        assert claims.identity == "patient-1"
        assert claims.video.room == f"{tenant_id}~consult-1"
        assert claims.video.room_join and not claims.video.room_admin
        assert not claims.video.room_create and not claims.video.room_list

        room = rtc.Room()
        await room.connect(body["wsUrl"], body["token"])
        try:
            assert room.isconnected()
            assert room.name == f"{tenant_id}~consult-1"
            assert room.local_participant.identity == "patient-1"
        finally:
            await room.disconnect()


async def test_the_audit_event_carries_the_requests_trace_and_never_the_jwt(
    api: httpx.AsyncClient, bus: Bus
) -> None:
    async with watch(bus, TokenIssued) as issued:
        response = await api.post(
            "/v1/tokens",
            json={"room": "consult-2", "identity": "doctor-1", "ttl": "30m"},
            headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        assert response.status_code == 201
        event = await issued.wait_for(lambda e: e.subject == "consult-2")
    assert event.source == "mediai/token"
    assert event.traceparent is not None and event.traceparent.split("-")[1] == TRACE_ID
    data = event.data
    assert isinstance(data, TokenIssued)
    assert (data.room, data.identity, data.ttl_seconds) == ("consult-2", "doctor-1", 1800)
    assert response.json()["token"] not in str(event)


async def test_a_patients_token_carries_the_patient_ref_as_a_signed_attribute(
    api: httpx.AsyncClient, stack: StackState, bus: Bus
) -> None:
    async with watch(bus, TokenIssued) as issued:
        response = await api.post(
            "/v1/tokens",
            json={"room": "consult-3", "identity": "sala-3-p", "patientRef": "pac-000123"},
        )
        assert response.status_code == 201, response.text
        event = await issued.wait_for(lambda e: e.subject == "consult-3")
    token = response.json()["token"]
    claims = livekit_api.TokenVerifier(stack.livekit_api_key, stack.livekit_api_secret).verify(
        token
    )
    assert claims.attributes == {"mediai.patient_ref": "pac-000123"}
    assert claims.video.can_update_own_metadata is False  # the participant cannot rewrite it
    assert isinstance(event.data, TokenIssued) and event.data.patient_ref == "pac-000123"
    # LiveKit gives the participant the attribute the clinic signed, and its webhook tells the
    # platform whose personal data the participant's name is.
    async with watch(bus, ParticipantJoined) as joins:
        room = rtc.Room()
        await room.connect(response.json()["wsUrl"], token)
        try:
            assert room.local_participant.attributes == {"mediai.patient_ref": "pac-000123"}
            joined = await joins.wait_for(lambda e: e.data.identity == "sala-3-p")
        finally:
            await room.disconnect()
    assert isinstance(joined.data, ParticipantJoined) and joined.data.patient_ref == "pac-000123"
    # Without patientRef: no attribute, and the event says no patient.
    plain = await api.post("/v1/tokens", json={"room": "consult-3", "identity": "doctor-3"})
    verifier = livekit_api.TokenVerifier(stack.livekit_api_key, stack.livekit_api_secret)
    assert not verifier.verify(plain.json()["token"]).attributes


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"identity": "p1"}, "room"),
        ({"room": "a room", "identity": "p1"}, "room"),
        ({"room": "x" * 65, "identity": "p1"}, "room"),
        ({"room": "r1", "identity": "p 1"}, "identity"),
        ({"room": "r1", "identity": "p1", "canPublish": "yes"}, "canPublish"),
        ({"room": "r1", "identity": "p1", "admin": True}, "admin"),
    ],
)
async def test_invalid_bodies_get_400_saying_what_was_wrong(
    api: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await api.post("/v1/tokens", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in str(error["details"])


@pytest.mark.parametrize(
    ("ttl", "code"), [("99h", "invalid_ttl"), ("soon", "invalid_ttl"), ("10s", "invalid_ttl")]
)
async def test_ttl_is_bounded(api: httpx.AsyncClient, ttl: str, code: str) -> None:
    response = await api.post("/v1/tokens", json={"room": "r1", "identity": "p1", "ttl": ttl})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc", "Bearer mk_forged"])
async def test_no_or_bad_key_is_401(stack: StackState, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
        response = await client.post(
            "/v1/tokens", json={"room": "r1", "identity": "p1"}, headers=headers
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_two_tenants_with_the_same_room_name_never_meet(
    api: httpx.AsyncClient, stack: StackState, other_tenant_key: str
) -> None:
    verifier = livekit_api.TokenVerifier(stack.livekit_api_key, stack.livekit_api_secret)
    mine = (await api.post("/v1/tokens", json={"room": "shared-name", "identity": "p1"})).json()
    theirs = (
        await api.post(
            "/v1/tokens",
            json={"room": "shared-name", "identity": "p1"},
            headers={"Authorization": f"Bearer {other_tenant_key}"},
        )
    ).json()
    assert verifier.verify(mine["token"]).video.room != verifier.verify(theirs["token"]).video.room


async def test_the_openapi_document_describes_the_endpoint(stack: StackState) -> None:
    async with httpx.AsyncClient() as client:
        schema = (
            await client.get(f"http://127.0.0.1:{_port(stack, 'token')}/schema/openapi.json")
        ).json()
    operation = schema["paths"]["/v1/tokens"]["post"]
    assert operation["operationId"] == "createToken"
    assert "CreateTokenRequest" in str(operation["requestBody"])


def _port(stack: StackState, name: str) -> int:
    return int(next(p.url for p in stack.parts if p.name == name).rsplit(":", 1)[1])
