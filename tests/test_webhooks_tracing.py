"""The webhooks' memory of room traces: a later webhook of the same room session is linked
without reading the log; another session, or a webhook without a session id, is not; a room
session whose start the log did not have is not looked up again for a few seconds."""

from __future__ import annotations

from services.webhooks.tracing import MISS_SECONDS, RoomTraces

ROOM_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_room_session_is_recalled_only_by_its_own_session_id() -> None:
    rooms = RoomTraces()
    rooms.remember("t1", "consulta-1", "RM_a", ROOM_TRACE)
    assert rooms.recall("t1", "consulta-1", "RM_a") == ("RM_a", ROOM_TRACE)
    assert rooms.recall("t1", "consulta-1", "RM_b") is None  # a reused room name
    assert rooms.recall("t1", "consulta-1", "") is None  # which session: only the log says
    assert rooms.recall("t2", "consulta-1", "RM_a") is None  # another tenant's room
    rooms.remember("t1", "consulta-1", "RM_b", ROOM_TRACE)
    assert rooms.recall("t1", "consulta-1", "RM_a") is None  # the room's last start wins


def test_the_least_recently_started_rooms_are_forgotten_first() -> None:
    rooms = RoomTraces(size=2)
    for room in ("a", "b", "c"):
        rooms.remember("t1", room, f"RM_{room}", ROOM_TRACE)
    assert rooms.recall("t1", "a", "RM_a") is None
    assert rooms.recall("t1", "b", "RM_b") is not None
    assert rooms.recall("t1", "c", "RM_c") is not None


def test_a_room_session_the_log_did_not_have_is_not_read_again_for_a_few_seconds() -> None:
    now = [100.0]
    rooms = RoomTraces(size=2, clock=lambda: now[0])
    rooms.missed("t1", "consulta-1", "RM_a")
    now[0] = 100.0 + MISS_SECONDS - 0.1
    assert rooms.recently_missed("t1", "consulta-1", "RM_a")
    assert not rooms.recently_missed("t1", "consulta-1", "RM_b")  # another session
    assert not rooms.recently_missed("t2", "consulta-1", "RM_a")  # another tenant
    now[0] = 100.0 + MISS_SECONDS
    assert not rooms.recently_missed("t1", "consulta-1", "RM_a")
    now[0] = 200.0
    rooms.missed("t1", "consulta-1", "RM_a")
    for room in ("b", "c"):  # bounded like the rooms remembered
        rooms.missed("t1", room, "RM_x")
    assert not rooms.recently_missed("t1", "consulta-1", "RM_a")
