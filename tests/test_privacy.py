"""The privacy classification of the schema: every string of every event is marked, the marks
are ones the sealing understands, and the inventory in docs/privacy.md follows the schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest

from shared.events import CURRENT
from shared.events.legacy import LEGACY
from shared.events.privacy import (
    KINDS,
    PERSONAL,
    Personal,
    Plain,
    classify,
    sealing_plan,
    unclassified,
)


def test_every_string_of_every_event_is_classified() -> None:
    missing = {cls.TYPE: unclassified(cls) for cls in (*CURRENT, *(old for old, _, _ in LEGACY))}
    missing = {t: paths for t, paths in missing.items() if paths}
    assert not missing, (
        "mark these fields Personal, Clinical, Pseudonym or Plain (shared/events/privacy.py): "
        f"{missing}"
    )


class Inner(msgspec.Struct):
    label: str
    code: Plain


class Careless(msgspec.Struct):
    note: str
    maybe: str | None = None
    tags: list[str] = []
    extra: dict[str, Any] = {}
    marked_dict: Annotated[dict[str, Any], PERSONAL] = {}
    inner: list[Inner] = []
    count: int = 0


class MarkedStruct(msgspec.Struct):
    inner: Annotated[Inner, PERSONAL]


class Message(msgspec.Struct):
    text: Personal


def test_an_unmarked_field_is_named_wherever_it_hides() -> None:
    assert unclassified(Careless) == [
        "note",
        "maybe",
        "tags[]",
        "extra{key}",
        "extra{}",
        "inner[].label",
    ]


def test_every_mark_is_a_known_kind_and_every_sealed_field_can_be_sealed() -> None:
    for cls in CURRENT:
        for field in classify(cls):
            assert field.kind in KINDS, (cls.TYPE, field)
        sealing_plan(cls)  # raises for a mark on something that cannot be sealed in place


def test_a_mark_on_a_struct_is_refused() -> None:
    with pytest.raises(TypeError, match="inner"):
        sealing_plan(MarkedStruct)


def test_sealed_fields_carry_no_constraints_a_ciphertext_would_break() -> None:
    """A sealed value is a longer token: a max_length or pattern would reject it."""
    for cls in CURRENT:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        sealed = {step.name for step in sealing_plan(cls)}
        for field in info.fields:
            if field.name in sealed:
                text = repr(field.type)
                assert "max_length=None" in text or "max_length" not in text, (cls, field)
                assert "pattern=None" in text or "pattern" not in text, (cls, field)


def test_the_patient_data_of_the_schema_is_sealed() -> None:
    """The fields the issue names are personal or clinical, and sealed where they travel."""
    from shared.events.agents import AgentDispatchRequested, AgentTranscribed
    from shared.events.clinical import AnamnesisRecorded, CopilotHintWritten
    from shared.events.rooms import ParticipantJoined

    def sealed(cls: type[msgspec.Struct]) -> dict[str, str]:
        return {step.path: step.kind for step in sealing_plan(cls)}

    assert sealed(AgentDispatchRequested) == {"instructions": "personal"}
    assert sealed(AgentTranscribed) == {"text": "personal"}
    assert sealed(CopilotHintWritten) == {"text": "personal"}
    assert sealed(ParticipantJoined) == {"name": "personal", "metadata": "personal"}
    assert sealed(AnamnesisRecorded) == {
        "questionnaire_response": "clinical",
        "summary_pt_br": "clinical",
    }
    # Pseudonyms travel in clear: they are how subjects and rooms are addressed.
    kinds = {f.path: f.kind for f in classify(ParticipantJoined)}
    assert kinds["identity"] == kinds["room"] == "pseudonym"


def test_personal_is_a_plain_str_on_the_wire() -> None:
    assert msgspec.json.decode(b'{"text": "enc:v1:k:abc"}', type=Message).text == "enc:v1:k:abc"


def test_billing_never_opens_anything() -> None:
    """Billing needs no personal data: its consumers never ask for a key, so an erasure can
    never stop an audit from replaying the log and matching to the cent."""
    import importlib
    import pkgutil

    import services.billing
    from shared.consumer import ConsumerSpec

    specs = [
        value
        for info in pkgutil.walk_packages(services.billing.__path__, "services.billing.")
        for value in vars(importlib.import_module(info.name)).values()
        if isinstance(value, ConsumerSpec)
    ]
    assert specs, "billing's consumers were not found"
    assert not [spec.durable for spec in specs if spec.opens]
