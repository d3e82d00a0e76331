"""The read model's personal columns, kept sealed as the events carry them (``shared.phi``).

Participant names and metadata, room metadata, track and ingress names arrive sealed in the
events (webhooks, the API's actions, the reconciliation's findings), and the projection, the read
model's only writer, copies the tokens into the rows without opening them (each column is sealed
with the path of the event field it holds: ``name``, ``metadata``). The API opens rows only to
answer, and the reconciliation to compare them with LiveKit's listing. A participant whose token
named a patient is sealed with that patient's key, the rest with the tenant's.
"""

from __future__ import annotations

from typing import TypeVar

from msgspec.structs import replace

from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import IngressRow
from services.rooms.track_core import TrackRow
from shared.phi import Phi

Row = TypeVar("Row", RoomRow, ParticipantRow, TrackRow, IngressRow)

COLUMNS: dict[type, tuple[str, ...]] = {
    RoomRow: ("metadata",),
    ParticipantRow: ("name", "metadata"),
    TrackRow: ("name",),
    IngressRow: ("name",),
}


async def opened(phi: Phi, row: Row) -> Row:
    values = {
        column: await phi.open_text(getattr(row, column), tenant=row.tenant, path=column)
        for column in COLUMNS[type(row)]
    }
    return replace(row, **values)


async def opened_all(phi: Phi, rows: list[Row]) -> list[Row]:
    return [await opened(phi, row) for row in rows]
