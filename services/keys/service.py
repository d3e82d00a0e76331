"""What the key service does with data keys: make, unwrap, destroy and re-wrap them."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.keys import store
from services.keys.kek import KeyEncryptionKey
from shared.crypto import DataKey, new_secret
from shared.events.platform import DataKeyDestroyed
from shared.keys import TENANT_PURPOSE, scope
from shared.outbox import add_to_outbox

log = logging.getLogger(__name__)

SOURCE = "mediai/keys"


def _aad(row: asyncpg.Record | dict[str, str]) -> bytes:
    """What a wrapped key is bound to: its own row, so wrapped bytes moved to another row (or
    another tenant's) do not unwrap."""
    return f"{row['key_id']}|{row['tenant_id']}|{row['patient_ref']}|{row['purpose']}".encode()


@dataclass
class KeyService:
    pool: asyncpg.Pool
    kek: KeyEncryptionKey

    async def _unwrap(self, row: asyncpg.Record) -> DataKey:
        secret = await self.kek.unwrap(row["kek_id"], bytes(row["wrapped"]), _aad(row))
        return DataKey(
            key_id=row["key_id"],
            tenant=row["tenant_id"],
            purpose=row["purpose"],
            patient_ref=row["patient_ref"],
            secret=secret,
        )

    async def for_sealing(self, tenant: str, patient_ref: str, purpose: str) -> DataKey:
        """The live key of the scope, made on first use."""
        tenant, patient_ref, purpose = scope(tenant, patient_ref, purpose)
        row = await store.live_key(self.pool, tenant, patient_ref, purpose)
        if row is None:
            fields = {
                "key_id": f"k{secrets.token_hex(10)}",
                "tenant_id": tenant,
                "patient_ref": patient_ref,
                "purpose": purpose,
            }
            kek_id, wrapped = await self.kek.wrap(new_secret(), _aad(fields))
            await store.insert_key(
                self.pool,
                key_id=fields["key_id"],
                tenant=tenant,
                patient_ref=patient_ref,
                purpose=purpose,
                kek_id=kek_id,
                wrapped=wrapped,
            )
            # Ours, or the one a concurrent request inserted first.
            row = await store.live_key(self.pool, tenant, patient_ref, purpose)
            assert row is not None
        else:
            await store.touch(self.pool, row["key_id"])
        return await self._unwrap(row)

    async def for_opening(self, tenant: str, key_id: str) -> DataKey | None:
        row = await store.key_by_id(self.pool, tenant, key_id)
        return None if row is None else await self._unwrap(row)

    async def for_dispatch(self, tenant: str, dispatch_id: str) -> list[DataKey] | None:
        """The keys an agent job of a live dispatch may hold: its patient's personal and
        clinical keys, or its tenant's key when it has no patient. None if not live."""
        dispatch = await store.live_dispatch(self.pool, dispatch_id, tenant)
        if dispatch is None:
            return None
        patient = dispatch["patient_ref"]
        if not patient:
            return [await self.for_sealing(tenant, "", TENANT_PURPOSE)]
        return [await self.for_sealing(tenant, patient, p) for p in ("personal", "clinical")]

    async def destroy(self, tenant: str, patient_ref: str, purpose: str, reason: str) -> list[str]:
        """Destroy the live key of the scope; its id (empty if there was none). Announced by
        ``DataKeyDestroyed`` (through the outbox, in the same transaction)."""
        tenant, patient_ref, purpose = scope(tenant, patient_ref, purpose)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            destroyed = await store.destroy(conn, tenant, patient_ref, purpose, reason)
            for key_id in destroyed:
                await add_to_outbox(
                    conn,
                    DataKeyDestroyed(
                        key_id=key_id,
                        purpose=purpose,
                        patient_ref=patient_ref,
                        reason=reason,
                        destroyed_at=now,
                    ),
                    source=SOURCE,
                    tenant=tenant,
                    key=key_id,
                )
        if destroyed:
            # The nulled bytes linger in the old row version until a vacuum reclaims it.
            await self.pool.execute("VACUUM data_keys")
            log.info("destroyed %d %s key(s) (%s)", len(destroyed), purpose, reason)
        return destroyed

    async def expire_clinical(self, retention_seconds: int, now: datetime) -> int:
        """Destroy the clinical keys not used for sealing within the retention period."""
        before = datetime.fromtimestamp(now.timestamp() - retention_seconds, UTC)
        expired = await store.clinical_unused_since(self.pool, before)
        for row in expired:
            await self.destroy(row["tenant_id"], row["patient_ref"], "clinical", "retention")
        return len(expired)

    async def rewrap_all(self, batch: int = 200) -> int:
        """Re-wrap every live key not wrapped by the current KEK (a rotation); returns how many."""
        done = 0
        while True:
            current = self.kek.current_id
            rows = await store.wrapped_by_other(self.pool, current, batch)
            if not rows:
                return done
            for row in rows:
                key = await self._unwrap(row)
                kek_id, wrapped = await self.kek.wrap(key.secret, _aad(row))
                await store.rewrap(self.pool, row["key_id"], row["kek_id"], kek_id, wrapped)
                done += 1
