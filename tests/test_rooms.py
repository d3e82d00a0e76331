"""The rooms service against the real stack: LiveKit's own webhooks, an rtc participant, the
read model, data messages, egress/ingress without workers, tenant isolation, reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import asyncpg
import httpx
import pytest
from livekit import api as lk
from livekit import rtc
from livekit.protocol import models

from deploy.stack import StackState
from services.rooms.reconcile import reconcile_once
from shared.bus import Bus
from shared.config import Settings
from shared.events import Envelope
from shared.events.reconciliation import (
    ParticipantFound,
    ParticipantPresumedGone,
    RoomPresumedFinished,
)
from shared.events.rooms import (
    DataMessageSent,
    EgressStarted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRemoved,
    ParticipantUpdated,
    RoomCreated,
    RoomDeleted,
    RoomFinished,
    RoomStarted,
    TrackMuted,
    TrackPublished,
)
from tests.support import eventually, watch
from tests.test_webhooks import Seen, deliver, tenant_of, unique, webhook

pytestmark = pytest.mark.livekit


@pytest.fixture
async def livekit(stack: StackState) -> AsyncIterator[lk.LiveKitAPI]:
    client = lk.LiveKitAPI(stack.livekit_url, stack.livekit_api_key, stack.livekit_api_secret)
    yield client
    await client.aclose()


@pytest.fixture
async def other(stack: StackState, other_tenant_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """Tenant B's client."""
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        timeout=15,
        headers={"Authorization": f"Bearer {other_tenant_key}"},
    ) as c:
        yield c


@pytest.fixture
async def hooks(stack: StackState) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=15) as client:
        yield client


@contextlib.asynccontextmanager
async def participant(
    api: httpx.AsyncClient, room: str, identity: str
) -> AsyncIterator[tuple[rtc.Room, asyncio.Queue[rtc.DataPacket]]]:
    """A real participant, joined with a token from POST /v1/tokens."""
    answer = await api.post("/v1/tokens", json={"room": room, "identity": identity})
    assert answer.status_code in (200, 201), answer.text
    token = answer.json()
    connection = rtc.Room()
    packets: asyncio.Queue[rtc.DataPacket] = asyncio.Queue()
    connection.on("data_received", packets.put_nowait)
    await connection.connect(token["wsUrl"], token["token"])
    try:
        yield connection, packets
    finally:
        await connection.disconnect()


async def identities(api: httpx.AsyncClient, room: str) -> list[str]:
    answer = await api.get(f"/v1/rooms/{room}/participants")
    return [p["identity"] for p in answer.json().get("participants", [])]


async def test_a_consultation_from_creation_to_deletion(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    livekit: lk.LiveKitAPI,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room = unique("consult")
    kinds = (
        RoomCreated,
        RoomStarted,
        ParticipantJoined,
        TrackPublished,
        DataMessageSent,
        TrackMuted,
        ParticipantUpdated,
        ParticipantLeft,
        RoomDeleted,
        RoomFinished,
    )
    async with watch(bus, *kinds, tenant=tenant) as stream:
        events = Seen(stream)
        created = await api.post(
            "/v1/rooms",
            json={"name": room, "emptyTimeout": 300, "maxParticipants": 4, "metadata": "triage"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["maxParticipants"] == 4
        listing = await livekit.room.list_rooms(lk.ListRoomsRequest(names=[f"{tenant}~{room}"]))
        assert [r.sid for r in listing.rooms] == [created.json()["sid"]]
        again = await api.post("/v1/rooms", json={"name": room})
        assert (again.status_code, again.json()["sid"]) == (200, created.json()["sid"])
        assert (await api.get(f"/v1/rooms/{room}")).json()["metadata"] == "triage"
        assert room in [r["name"] for r in (await api.get("/v1/rooms")).json()["rooms"]]

        def about(kind: type, **fields: object) -> Callable[[Envelope], bool]:
            return lambda e: (
                isinstance(e.data, kind)
                and e.data.room == room
                and all(getattr(e.data, k) == v for k, v in fields.items())
            )

        await events.find(about(RoomCreated), timeout=10)
        await events.find(about(RoomStarted), timeout=20)

        async with participant(api, room, "patient-1") as (connection, packets):
            joined = await events.find(about(ParticipantJoined, identity="patient-1"), timeout=20)
            assert (joined.tenant, joined.subject, joined.data.kind) == (tenant, room, "standard")
            assert await eventually(lambda: _has(api, room, "patient-1"))

            source = rtc.AudioSource(48000, 1)
            track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
            publication = await connection.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            await events.find(about(TrackPublished, track_sid=publication.sid), timeout=20)

            assert await eventually(lambda: _has_track(api, room, "patient-1", publication.sid))
            muted = await api.post(
                f"/v1/rooms/{room}/participants/patient-1/tracks/{publication.sid}/mute",
                json={"muted": True},
            )
            assert muted.status_code == 200, muted.text
            assert muted.json()["muted"] is True
            await events.find(about(TrackMuted, track_sid=publication.sid, muted=True))

            updated = await api.patch(
                f"/v1/rooms/{room}/participants/patient-1",
                json={
                    "metadata": '{"role":"patient"}',
                    "permission": {
                        "canPublish": True,
                        "canSubscribe": True,
                        "canPublishData": False,
                    },
                },
            )
            assert updated.status_code == 200, updated.text
            assert updated.json()["metadata"] == '{"role":"patient"}'
            await events.find(about(ParticipantUpdated, identity="patient-1"))

            sent = await api.post(
                f"/v1/rooms/{room}/data",
                json={
                    "data": "Olá, o médico já vem.",
                    "topic": "mediai.chat",
                    "destinationIdentities": ["patient-1"],
                },
            )
            assert sent.status_code == 200, sent.text
            packet = await asyncio.wait_for(packets.get(), timeout=10)
            assert packet.data == "Olá, o médico já vem.".encode()
            assert packet.topic == "mediai.chat"
            recorded = await events.find(about(DataMessageSent))
            assert recorded.data.size_bytes == len(packet.data)

        left = await events.find(about(ParticipantLeft, identity="patient-1"), timeout=20)
        assert left.data.left_at >= joined.data.joined_at
        assert await eventually(lambda: _empty(api, room), timeout=30)

        assert (await api.delete(f"/v1/rooms/{room}")).status_code == 204
        await events.find(about(RoomDeleted))
        finished = await events.find(about(RoomFinished), timeout=20)
        assert finished.data.room_sid == created.json()["sid"]
    assert (await api.get(f"/v1/rooms/{room}")).status_code == 404
    assert (
        await livekit.room.list_rooms(lk.ListRoomsRequest(names=[f"{tenant}~{room}"]))
    ).rooms == []


async def _has(api: httpx.AsyncClient, room: str, identity: str) -> bool:
    return identity in await identities(api, room)


async def _has_track(api: httpx.AsyncClient, room: str, identity: str, track: str) -> bool:
    shown = (await api.get(f"/v1/rooms/{room}/participants/{identity}")).json()
    return track in [t["sid"] for t in shown.get("tracks", [])]


async def _empty(api: httpx.AsyncClient, room: str) -> bool:
    answer = await api.get(f"/v1/rooms/{room}/participants")
    return answer.status_code == 200 and answer.json()["participants"] == []


async def test_removing_a_participant_disconnects_it(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room = unique("remove")
    assert (await api.post("/v1/rooms", json={"name": room})).status_code == 201
    async with (
        watch(bus, ParticipantRemoved, ParticipantLeft, tenant=tenant) as stream,
        participant(api, room, "doctor-1") as (connection, _),
    ):
        events = Seen(stream)
        disconnected = asyncio.get_running_loop().create_future()
        connection.on(
            "disconnected", lambda reason: disconnected.done() or disconnected.set_result(reason)
        )
        assert await eventually(lambda: _has(api, room, "doctor-1"))
        assert (await api.delete(f"/v1/rooms/{room}/participants/doctor-1")).status_code == 204
        await asyncio.wait_for(disconnected, timeout=10)
        removed = await events.find(lambda e: isinstance(e.data, ParticipantRemoved))
        assert removed.data.identity == "doctor-1"
        left = await events.find(
            lambda e: isinstance(e.data, ParticipantLeft) and e.data.room == room, timeout=20
        )
        assert left.data.disconnect_reason == "participant_removed"
    assert (await api.delete(f"/v1/rooms/{room}/participants/doctor-1")).status_code == 404
    await api.delete(f"/v1/rooms/{room}")


async def test_names_and_identities_are_validated(api: httpx.AsyncClient) -> None:
    for name in ("a" * 65, "-leading-dash", "tenant~room", "with space", "ponto.final"):
        answer = await api.post("/v1/rooms", json={"name": name})
        assert answer.status_code == 400, name
        assert answer.json()["error"]["code"] == "invalid_request"
        answer = await api.get(f"/v1/rooms/{name}")
        assert answer.status_code == 400, name
        assert answer.json()["error"]["code"] == "invalid_room_name"
        assert "1-64 characters" in answer.json()["error"]["message"]
    answer = await api.get("/v1/rooms/fine/participants/bad%20identity")
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_identity")
    answer = await api.post(
        "/v1/rooms/fine/data", json={"data": "x", "destinationIdentities": ["bad identity"]}
    )
    assert answer.status_code == 400
    answer = await api.post("/v1/rooms", json={"name": "ok", "emptyTimeout": -1})
    assert answer.status_code == 400


async def test_egress_and_ingress_without_workers_say_so(
    api: httpx.AsyncClient,
    other: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    stack: StackState,
    hooks: httpx.AsyncClient,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room = unique("record")
    assert (await api.post("/v1/rooms", json={"name": room})).status_code == 201
    answer = await api.post("/v1/egress/start", json={"room": room, "output": "mp4"})
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "egress_unavailable"
    assert "egress" in error["message"]
    assert "docs/rooms.md" in error["message"]
    missing = await api.post("/v1/egress/start", json={"room": unique("nowhere")})
    assert missing.status_code == 404
    answer = await api.post(
        "/v1/ingress", json={"room": room, "inputType": "rtmp", "participantIdentity": "camera-1"}
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "ingress_unavailable")

    # Egress and ingress LiveKit reports (workers elsewhere) are listed for their tenant only.
    info = lk.EgressInfo(
        egress_id=unique("EG"),
        room_name=f"{tenant}~{room}",
        status=lk.EgressStatus.EGRESS_ACTIVE,
        room_composite=lk.RoomCompositeEgressRequest(),
    )
    ingress = lk.IngressInfo(
        ingress_id=unique("IN"),
        room_name=f"{tenant}~{room}",
        input_type=lk.IngressInput.WHIP_INPUT,
        participant_identity="camera-1",
        state=lk.IngressState(status=lk.IngressState.Status.ENDPOINT_PUBLISHING),
    )
    async with watch(bus, EgressStarted, tenant=tenant) as events:
        for hook in (
            webhook("ingress_started", ingress_info=ingress),
            webhook("egress_started", egress_info=info),
        ):
            assert (await deliver(hooks, hook, stack)).status_code == 200
        await events.wait_for(lambda e: e.data.egress_id == info.egress_id)

    async def listed() -> list[dict[str, object]]:
        rows = (await api.get("/v1/egress", params={"room": room})).json()["egress"]
        return [r for r in rows if r["egressId"] == info.egress_id]

    [row] = await eventually(listed)
    assert (row["status"], row["kind"]) == ("active", "room_composite")
    # The projection applies in order: the ingress, sent first, is there too.
    [entry] = (await api.get("/v1/ingress", params={"room": room})).json()["ingress"]
    assert (entry["ingressId"], entry["status"], entry["inputType"]) == (
        ingress.ingress_id,
        "publishing",
        "whip",
    )
    stop = await api.post(f"/v1/egress/{info.egress_id}/stop")
    assert (stop.status_code, stop.json()["error"]["code"]) == (503, "egress_unavailable")

    assert (await other.post(f"/v1/egress/{info.egress_id}/stop")).status_code == 404
    assert (await other.delete(f"/v1/ingress/{ingress.ingress_id}")).status_code == 404
    assert info.egress_id not in str((await other.get("/v1/egress")).json())
    assert ingress.ingress_id not in str((await other.get("/v1/ingress")).json())
    await api.delete(f"/v1/rooms/{room}")


async def test_another_tenant_never_reaches_a_room(
    api: httpx.AsyncClient,
    other: httpx.AsyncClient,
    pool: asyncpg.Pool,
    tenant_key: str,
    other_tenant_key: str,
    stack: StackState,
) -> None:
    room = unique("private")
    assert (await api.post("/v1/rooms", json={"name": room})).status_code == 201
    async with participant(api, room, "patient-1") as (connection, _):
        source = rtc.AudioSource(48000, 1)
        publication = await connection.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("mic", source), rtc.TrackPublishOptions()
        )
        assert await eventually(lambda: _has_track(api, room, "patient-1", publication.sid))
        base = f"/v1/rooms/{room}"
        attempts = [
            ("GET", base, None),
            ("DELETE", base, None),
            ("GET", f"{base}/participants", None),
            ("GET", f"{base}/participants/patient-1", None),
            ("PATCH", f"{base}/participants/patient-1", {"metadata": "x"}),
            (
                "POST",
                f"{base}/participants/patient-1/tracks/{publication.sid}/mute",
                {"muted": True},
            ),
            ("DELETE", f"{base}/participants/patient-1", None),
            ("POST", f"{base}/data", {"data": "psst"}),
            ("POST", "/v1/egress/start", {"room": room}),
        ]
        for method, path, body in attempts:
            answer = await other.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
        assert room not in [r["name"] for r in (await other.get("/v1/rooms")).json()["rooms"]]
        # B's token for the same name is for B's own room, never A's.
        token = (
            await other.post("/v1/tokens", json={"room": room, "identity": "intruder"})
        ).json()["token"]
        claims = lk.TokenVerifier(stack.livekit_api_key, stack.livekit_api_secret).verify(token)
        other_tenant = await tenant_of(pool, other_tenant_key)
        assert claims.video.room == f"{other_tenant}~{room}"
        # And A's room is untouched.
        assert await identities(api, room) == ["patient-1"]
        shown = (await api.get(f"{base}/participants/patient-1")).json()
        assert [t["muted"] for t in shown["tracks"]] == [False]
    await api.delete(f"/v1/rooms/{room}")


async def test_the_reconciliation_publishes_what_dropped_webhooks_missed(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    stack: StackState,
    hooks: httpx.AsyncClient,
    livekit: lk.LiveKitAPI,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room, phantom_room = unique("heal"), unique("phantom")
    created = (await api.post("/v1/rooms", json={"name": room})).json()
    findings = (ParticipantPresumedGone, ParticipantFound, RoomPresumedFinished)
    async with (
        participant(api, room, "patient-1"),
        watch(bus, *findings, tenant=tenant) as stream,
    ):
        events = Seen(stream)
        assert await eventually(lambda: _has(api, room, "patient-1"))
        # A join LiveKit never had (as if its leave had been dropped), a room that ended
        # without a room_finished, and a real participant whose join was lost.
        ghost = models.ParticipantInfo(sid=unique("PA"), identity="ghost")
        lk_room = models.Room(sid=created["sid"], name=f"{tenant}~{room}")
        phantom = models.Room(sid=unique("RM"), name=f"{tenant}~{phantom_room}")
        for hook in (
            webhook("participant_joined", room=lk_room, participant=ghost),
            webhook("room_started", room=phantom),
        ):
            assert (await deliver(hooks, hook, stack)).status_code == 200
        assert await eventually(lambda: _has(api, room, "ghost"))
        assert await eventually(lambda: _status(api, phantom_room, 200))
        await pool.execute(
            "DELETE FROM room_participants WHERE room_sid = $1 AND identity = $2",
            created["sid"],
            "patient-1",
        )
        assert await identities(api, room) == ["ghost"]

        await reconcile_once(pool, livekit, bus.phi, settle=timedelta(0))

        # (The service's own pass may have published them first: one event either way.)
        gone = await events.find(lambda e: isinstance(e.data, ParticipantPresumedGone))
        assert (gone.data.identity, gone.data.room, gone.subject) == ("ghost", room, room)
        found = await events.find(lambda e: isinstance(e.data, ParticipantFound))
        assert (found.data.identity, found.data.room_sid) == ("patient-1", created["sid"])
        finished = await events.find(lambda e: isinstance(e.data, RoomPresumedFinished))
        assert finished.data.room == phantom_room
        # The projection folds them: the reconciliation itself wrote no row.
        assert await eventually(lambda: _identities_are(api, room, ["patient-1"]))
        assert await eventually(lambda: _status(api, phantom_room, 404))
        # Folded, there is nothing more to find here.
        again = await reconcile_once(pool, livekit, bus.phi, settle=timedelta(0))
        assert not {room, phantom_room} & {e.subject for e in again}
    await api.delete(f"/v1/rooms/{room}")


async def _identities_are(api: httpx.AsyncClient, room: str, expected: list[str]) -> bool:
    return await identities(api, room) == expected


async def _status(api: httpx.AsyncClient, room: str, status: int) -> bool:
    return (await api.get(f"/v1/rooms/{room}")).status_code == status


async def test_the_openapi_document_describes_every_endpoint(
    stack: StackState, settings: Settings
) -> None:
    async with httpx.AsyncClient() as client:
        rooms = (
            await client.get(f"http://{settings.host}:{settings.rooms_port}/schema/openapi.json")
        ).json()
        hooks = (
            await client.get(f"http://{settings.host}:{settings.webhooks_port}/schema/openapi.json")
        ).json()
    operations = {op["operationId"]: op for path in rooms["paths"].values() for op in path.values()}
    assert set(operations) >= {
        "createRoom",
        "listRooms",
        "getRoom",
        "deleteRoom",
        "sendData",
        "listParticipants",
        "getParticipant",
        "removeParticipant",
        "muteTrack",
        "updateParticipant",
        "startEgress",
        "stopEgress",
        "listEgress",
        "createIngress",
        "deleteIngress",
        "listIngress",
    }
    for name, operation in operations.items():
        assert {"401", "503"} <= operation["responses"].keys(), name
        for status, response in operation["responses"].items():
            if status >= "400":
                assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                    "ErrorBody"
                ), (name, status)
    assert "requestBody" in operations["createRoom"]
    webhook_op = hooks["paths"]["/v1/webhooks/livekit"]["post"]
    assert {"401", "503"} <= webhook_op["responses"].keys()
    assert "application/webhook+json" in webhook_op["requestBody"]["content"]
