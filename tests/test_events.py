"""The event schema: CloudEvents envelope, round trips, golden files of every version, subjects."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from shared import subjects
from shared.events import CODEC, CURRENT, EventDecodeError, TokenIssued, envelope
from shared.events.legacy import LEGACY

GOLDEN = Path(__file__).parent / "golden" / "events"


def test_every_type_is_stable_versioned_and_documented() -> None:
    for event_type in CURRENT:
        assert event_type.TYPE.startswith("mediai."), event_type
        assert event_type.TYPE.rsplit(".", 1)[1].startswith("v"), event_type
        assert event_type.__doc__, f"{event_type.__name__} needs a docstring (it is the doc)"
        assert event_type.PRODUCER, event_type
        assert event_type.__struct_config__.frozen, event_type


def test_envelope_is_cloudevents_structured_json() -> None:
    event = envelope(
        TokenIssued(
            room="r1",
            identity="p1",
            can_publish=True,
            can_subscribe=True,
            ttl_seconds=60,
            expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        ),
        source="mediai/token",
        tenant="tabcdefghij",
        subject="r1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    document = json.loads(CODEC.encode(event))
    assert document["specversion"] == "1.0"
    assert document["type"] == "mediai.token.issued.v1"
    assert document["datacontenttype"] == "application/json"
    assert {"id", "source", "subject", "time", "tenant", "traceparent", "data"} <= document.keys()
    assert document["id"][14] == "7"  # a UUIDv7
    assert CODEC.decode(CODEC.encode(event)) == event


def test_golden_files_cover_every_current_and_legacy_version() -> None:
    golden_types = {json.loads(p.read_bytes())["type"] for p in GOLDEN.glob("*.json")}
    missing = {t.TYPE for t in CURRENT} - golden_types
    missing |= {old_type for _, old_type, _ in LEGACY} - golden_types
    assert not missing, f"add golden files for {sorted(missing)} (see tests/golden/README.md)"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_files_still_decode(path: Path) -> None:
    """A breaking edit of an event (a renamed or retyped field) fails here."""
    event = CODEC.decode(path.read_bytes())
    assert event.type in CODEC.types  # old versions come back upcast to a current type
    assert event.type == event.data.TYPE


def test_events_from_before_the_patient_reference_decode_as_about_no_patient() -> None:
    for name in ("mediai.agent.transcribed.v1", "mediai.anamnesis.recorded.v1"):
        assert CODEC.decode((GOLDEN / f"{name}.json").read_bytes()).data.patient_ref == ""
    given = CODEC.decode((GOLDEN / "mediai.consent.given.v1.json").read_bytes()).data
    assert (given.patient_ref, given.given_by, given.guardian_relation) == ("", "patient", "")


def test_unknown_or_malformed_events_are_rejected_clearly() -> None:
    with pytest.raises(EventDecodeError, match="unknown event type"):
        CODEC.decode(
            b'{"specversion":"1.0","id":"1","source":"s","type":"mediai.nope.v1",'
            b'"subject":"x","time":"2026-01-01T00:00:00Z","tenant":"t","data":{}}'
        )
    with pytest.raises(EventDecodeError):
        CODEC.decode(b"not json")
    path = GOLDEN / "mediai.token.issued.v1.json"
    document = json.loads(path.read_bytes())
    document["data"]["ttl_seconds"] = "sixty"
    with pytest.raises(EventDecodeError, match="ttl_seconds"):
        CODEC.decode(json.dumps(document).encode())


def test_nothing_outside_the_schema_can_be_encoded() -> None:
    class Stray(TokenIssued, frozen=True, kw_only=True):
        TYPE = "mediai.stray.v1"

    stray = Stray(
        room="r",
        identity="i",
        can_publish=True,
        can_subscribe=True,
        ttl_seconds=1,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="not in the event schema"):
        CODEC.encode(envelope(stray, source="s", tenant="t", subject="x"))


def test_subject_tokens_from_users_cannot_break_the_subject_scheme() -> None:
    for hostile in ("a.b", "a*", "a>", "with space", "tab\t", "ação", ""):
        escaped = subjects.token(hostile)
        assert escaped and not any(c in escaped for c in ".*> \t"), hostile
    data = TokenIssued(
        room="x",
        identity="i",
        can_publish=True,
        can_subscribe=True,
        ttl_seconds=1,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    subject = subjects.event_subject(data, tenant="t1", key="room.with.dots")
    assert subject == "mediai.events.token.issued.v1.t1.room%2Ewith%2Edots"
    assert subject.count(".") == 6  # mediai.events.token.issued.v1.<tenant>.<key>


def test_golden_files_are_canonical_cloudevents() -> None:
    for path in GOLDEN.glob("*.json"):
        document = msgspec.json.decode(path.read_bytes())
        assert document["specversion"] == "1.0", path.name
        assert path.stem == document["type"], f"{path.name} must be named after its type"
