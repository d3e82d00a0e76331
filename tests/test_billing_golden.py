"""Old event versions stay billable: golden streams of every version replay to the same usage."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from services.billing.meters import DEFAULT, METERED_EVENTS
from services.billing.projector import Projector
from shared.events import CODEC, CURRENT, EventCodec
from shared.events.agents import AgentUsageReported
from shared.events.legacy import LEGACY
from tests import billing_script as script

GOLDEN = Path(__file__).parent / "golden" / "billing"
STREAMS = sorted(GOLDEN.glob("*.jsonl"))


def replay(lines: list[bytes], codec: EventCodec = CODEC) -> dict[str, int]:
    projector = Projector(DEFAULT)
    for sequence, line in enumerate(lines, start=1):
        projector.apply(sequence, codec.decode(line))
    totals: dict[str, int] = {}
    for row in projector.take_rows():
        totals[row.meter] = totals.get(row.meter, 0) + row.quantity
    return {meter: quantity for meter, quantity in totals.items() if quantity}


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_golden_streams_replay_to_the_hand_computed_usage(path: Path) -> None:
    lines = path.read_bytes().splitlines()
    assert replay(lines) == script.TOTALS


def test_every_version_of_every_metered_type_has_a_golden_stream() -> None:
    seen = {
        msgspec.json.decode(line)["type"] for p in STREAMS for line in p.read_bytes().splitlines()
    }
    metered = {e.TYPE for e in METERED_EVENTS}
    prefixes = {t.rsplit(".", 1)[0] for t in metered}
    legacy = {old for _, old, _ in LEGACY if old.rsplit(".", 1)[0] in prefixes}
    missing = (metered | legacy) - seen
    assert not missing, f"add a golden stream with {sorted(missing)} to {GOLDEN}"


class _UsageV0(msgspec.Struct, frozen=True, kw_only=True):
    """A made-up earlier usage report: one token count, durations in minutes."""

    TYPE: ClassVar[str] = "mediai.agent.usage_reported.v0"
    dispatch_id: str
    room: str
    period_start: datetime
    period_end: datetime
    tokens: int = 0
    session_minutes: float = 0.0


def _upcast(old: Any) -> AgentUsageReported:
    return AgentUsageReported(
        dispatch_id=old.dispatch_id,
        room=old.room,
        role="",
        period_start=old.period_start,
        period_end=old.period_end,
        llm_prompt_tokens=old.tokens,
        session_seconds=old.session_minutes * 60,
    )


def test_an_upcast_old_version_is_metered_as_the_current_one() -> None:
    """How a .v2 will be handled: the replay decodes with the codec, which upcasts."""
    codec = EventCodec(CURRENT, [(_UsageV0, _UsageV0.TYPE, _upcast)])
    old = (
        b'{"specversion":"1.0","id":"01890000-0000-7000-8000-0000000000a0","source":"mediai/agent",'
        b'"type":"mediai.agent.usage_reported.v0","subject":"r","time":"2000-06-01T10:00:00Z",'
        b'"tenant":"t1","data":{"dispatch_id":"d","room":"r","period_start":"2000-06-01T10:00:00Z",'
        b'"period_end":"2000-06-01T10:00:30Z","tokens":900,"session_minutes":0.5}}'
    )
    assert replay([old], codec) == {"llm_prompt_tokens": 900, "agent_session": 30_000}
