"""The token service through the gateway, with the real LiveKit server accepting the token."""

from __future__ import annotations

import httpx
import jwt
import pytest
from livekit import api as livekit_api
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2

from deploy.stack import StackState
from shared.bus import Bus
from shared.events import TokenIssued
from shared.events.rooms import ParticipantJoined
from shared.participants import ROLE_ATTRIBUTE
from tests.support import until, watch

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
            json={"room": "consult-2", "identity": "doctor-1", "ttl": "30m", "role": "doctor"},
            headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        assert response.status_code == 201
        event = await issued.wait_for(lambda e: e.subject == "consult-2")
    assert event.source == "mediai/token"
    assert event.traceparent is not None and event.traceparent.split("-")[1] == TRACE_ID
    data = event.data
    assert isinstance(data, TokenIssued)
    assert (data.room, data.identity, data.ttl_seconds) == ("consult-2", "doctor-1", 1800)
    assert data.role == "doctor"  # who was given a doctor's token is on the audit record
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
    signed = {ROLE_ATTRIBUTE: "patient", "mediai.patient_ref": "pac-000123"}
    assert claims.attributes == signed
    assert claims.video.can_update_own_metadata is False  # the participant cannot rewrite it
    assert isinstance(event.data, TokenIssued) and event.data.patient_ref == "pac-000123"
    # LiveKit gives the participant the attribute the clinic signed, and its webhook tells the
    # platform whose personal data the participant's name is.
    async with watch(bus, ParticipantJoined) as joins:
        room = rtc.Room()
        await room.connect(response.json()["wsUrl"], token)
        try:
            assert room.local_participant.attributes == signed
            joined = await joins.wait_for(lambda e: e.data.identity == "sala-3-p")
        finally:
            await room.disconnect()
    assert isinstance(joined.data, ParticipantJoined) and joined.data.patient_ref == "pac-000123"
    # Without patientRef: no such attribute. A doctor's token names no patient.
    plain = await api.post("/v1/tokens", json={"room": "consult-3", "identity": "p-3"})
    verifier = livekit_api.TokenVerifier(stack.livekit_api_key, stack.livekit_api_secret)
    assert verifier.verify(plain.json()["token"]).attributes == {ROLE_ATTRIBUTE: "patient"}
    doctor = await api.post(
        "/v1/tokens",
        json={"room": "consult-3", "identity": "d-3", "role": "doctor", "patientRef": "pac-1"},
    )
    assert doctor.status_code == 400
    assert doctor.json()["error"]["code"] == "patient_ref_not_allowed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"identity": "p1"}, "room"),
        ({"room": "a room", "identity": "p1"}, "room"),
        ({"room": "x" * 65, "identity": "p1"}, "room"),
        ({"room": "r1", "identity": "p 1"}, "identity"),
        ({"room": "r1", "identity": "p1", "canPublish": "yes"}, "canPublish"),
        ({"room": "r1", "identity": "p1", "admin": True}, "admin"),
        # Only LiveKit makes agents: a caller can ask for no other participant kind,
        ({"room": "r1", "identity": "p1", "kind": "agent"}, "kind"),
        # nor for attributes or metadata of its own choosing.
        ({"room": "r1", "identity": "p1", "attributes": {ROLE_ATTRIBUTE: "copilot"}}, "attrib"),
        ({"room": "r1", "identity": "p1", "metadata": "{}"}, "metadata"),
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


async def own_attributes_answer(
    participant: rtc.LocalParticipant, attributes: dict[str, str]
) -> str:
    """The server's answer ("" or its error) to a participant setting its own attributes: the
    request ``LocalParticipant.set_attributes`` makes, whose answer that method drops."""
    request = ffi_pb2.FfiRequest()
    request.set_local_attributes.local_participant_handle = participant._ffi_handle.handle
    for key, value in attributes.items():
        entry = request.set_local_attributes.attributes.add()
        entry.key, entry.value = key, value
    queue = FfiClient.instance.queue.subscribe()
    try:
        sent = FfiClient.instance.request(request).set_local_attributes.async_id
        answer = await queue.wait_for(lambda e: e.set_local_attributes.async_id == sent)
    finally:
        FfiClient.instance.queue.unsubscribe(queue)
    return str(answer.set_local_attributes.error)


async def test_the_role_is_signed_into_the_token_and_the_participant_cannot_change_it(
    api: httpx.AsyncClient, stack: StackState
) -> None:
    doctor_grant = (
        await api.post("/v1/tokens", json={"room": "c-roles", "identity": "m-1", "role": "doctor"})
    ).json()
    patient_grant = (
        await api.post("/v1/tokens", json={"room": "c-roles", "identity": "p-1"})
    ).json()
    # Signed claims, read raw: the role is an attribute, updating it is forbidden in so many
    # words, and there is no kind (LiveKit then makes a standard participant).
    claims = jwt.decode(doctor_grant["token"], stack.livekit_api_secret, algorithms=["HS256"])
    assert claims["attributes"] == {ROLE_ATTRIBUTE: "doctor"}
    assert claims["video"]["canUpdateOwnMetadata"] is False
    assert "kind" not in claims and "metadata" not in claims
    patient_claims = jwt.decode(
        patient_grant["token"], stack.livekit_api_secret, algorithms=["HS256"]
    )
    assert patient_claims["attributes"] == {ROLE_ATTRIBUTE: "patient"}  # the default

    doctor, patient = rtc.Room(), rtc.Room()
    await doctor.connect(doctor_grant["wsUrl"], doctor_grant["token"])
    await patient.connect(patient_grant["wsUrl"], patient_grant["token"])
    try:
        await until(lambda: "m-1" in patient.remote_participants)
        seen = patient.remote_participants["m-1"]
        assert seen.attributes == {ROLE_ATTRIBUTE: "doctor"}
        assert seen.kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
        # The patient tries to make itself a doctor (or the copilot): the server refuses.
        for role in ("doctor", "copilot"):
            answer = await own_attributes_answer(patient.local_participant, {ROLE_ATTRIBUTE: role})
            assert "NotAllowed" in answer and "update own metadata" in answer
        async with livekit_api.LiveKitAPI(
            stack.livekit_url.replace("ws", "http", 1),
            stack.livekit_api_key,
            stack.livekit_api_secret,
        ) as server:
            listed = await server.room.list_participants(
                livekit_api.ListParticipantsRequest(room=patient.name)
            )
        assert {p.identity: dict(p.attributes) for p in listed.participants} == {
            "m-1": {ROLE_ATTRIBUTE: "doctor"},
            "p-1": {ROLE_ATTRIBUTE: "patient"},
        }
    finally:
        await doctor.disconnect()
        await patient.disconnect()


@pytest.mark.parametrize("role", ["admin", "Doctor", "copilot", "agent", ""])
async def test_a_role_not_given_to_people_is_400_listing_the_valid_ones(
    api: httpx.AsyncClient, role: str
) -> None:
    response = await api.post("/v1/tokens", json={"room": "r1", "identity": "p1", "role": role})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_role"
    assert error["details"] == [{"field": "role", "valid": ["patient", "doctor"]}]


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
