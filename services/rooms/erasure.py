"""Erasing a patient from the rooms read model: every column sealed with one of the patient's
destroyed personal-data keys (``ErasureRequested.destroyed_keys``) is emptied.

The key's destruction already made those values unreadable; emptying them leaves no ciphertext
of the patient behind in the read model either. The read model has no ``patient_ref`` column:
the key a value names is how it is found, which also reaches rows written before participants
carried one. Folded by the projection (so a rebuild from the log empties the same columns), and
answered with ``PatientDataErased`` for the erasure's certificate.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from shared.consumer import Delivery, data_of
from shared.crypto import PREFIX
from shared.db import Connection, projection
from shared.events import Envelope
from shared.events.patients import ErasureRequested, PatientDataErased
from shared.outbox import add_to_outbox

SOURCE = "mediai/rooms"
HOLDER = "rooms"
# The read model's personal columns (services/rooms/privacy.py), by table.
SEALED_COLUMNS = {
    "room_instances": ("metadata",),
    "room_participants": ("name", "metadata"),
    "room_tracks": ("name",),
    "room_ingress": ("name",),
}


async def erase_sealed(conn: Connection, key_ids: list[str]) -> dict[str, int]:
    """Empty every column sealed with one of ``key_ids``; how many, by table.column."""
    if not key_ids:
        return {}
    # Key ids are "k" and hex digits: nothing LIKE would read as a wildcard.
    patterns = [f"{PREFIX}{key_id}:%" for key_id in key_ids]
    erased: dict[str, int] = {}
    for table, columns in SEALED_COLUMNS.items():
        for column in columns:
            status = await conn.execute(
                f"UPDATE {table} SET {column} = '', updated_at = now()"  # noqa: S608 - our names
                f" WHERE {column} LIKE ANY($1::text[])",
                patterns,
            )
            if count := int(status.rsplit(" ", 1)[1]):
                erased[f"{table}.{column}"] = count
    return erased


async def fold(conn: Connection, tenant: str, data: ErasureRequested, at: datetime) -> None:
    """The projection's fold (a rebuild from the log runs it too)."""
    await erase_sealed(conn, data.destroyed_keys)


async def erase(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """The read-model consumer's handler: fold, and say what was erased, once."""
    erasure = data_of(event, ErasureRequested)
    async with projection(pool, delivery, event.id) as conn:
        if conn is None:
            return
        erased = await erase_sealed(conn, erasure.destroyed_keys)
        await add_to_outbox(
            conn,
            PatientDataErased(
                erasure_id=erasure.erasure_id,
                patient_ref=erasure.patient_ref,
                holder=HOLDER,
                erased=erased,
                erased_at=datetime.now(UTC),
            ),
            source=SOURCE,
            tenant=event.tenant,
            key=erasure.patient_ref,
        )
