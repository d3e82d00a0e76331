"""Erasing a patient (LGPD Art. 18 VI): record the request, destroy the personal-data key, empty
the rows, tell every other holder.

1. The erasure is recorded (``patient_erasures``), before anything is destroyed.
2. The key service destroys the patient's personal-data key: from then on every personal field
   sealed with it, in every stream, dead letter, table and backup, is unreadable. The
   clinical-record key is not touched: it follows the clinic's retention of medical records.
3. In one transaction: scheduling's own rows are emptied (appointments' name, contact and
   reasons; the answers kept for retried requests), and ``ErasureRequested`` (the destroyed key
   ids) and scheduling's ``PatientDataErased`` go to the outbox. Every other holder folds the
   first and answers with its own ``PatientDataErased``; the certificate lists them.

Each step is idempotent, so a process that dies between two (the crash point
``erasure.after_keys_destroyed`` sits between 2 and 3) is carried on by the next request for
the patient, or by the resumer every service runs (``RESUMER``): the key is gone or it is not,
and the rows follow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import uuid6
from litestar import Litestar
from nats.aio.client import Client as NatsClient

from services.scheduling.patients import core, store
from services.scheduling.patients.core import Erasure, HolderReport
from shared import keys_api
from shared.background import every
from shared.crashpoints import crash_point
from shared.events.patients import ErasureRequested, PatientDataErased
from shared.outbox import add_to_outbox
from shared.phi import KeySource

log = logging.getLogger(__name__)

SOURCE = "mediai/scheduling"
HOLDER = "scheduling"
# An erasure still in progress after this long was left by a process that died.
ABANDONED_AFTER_SECONDS = 30.0
RESUME_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class Eraser:
    """What an erasure needs: the database, the key service (over NATS), and this process's
    own keys (``keys``), which forget the destroyed ones before the erasure is answered: the
    announcement that evicts them everywhere else arrives moments later, and an export asked
    right after the answer must already find nothing."""

    pool: asyncpg.Pool
    nc: NatsClient
    keys: KeySource

    async def request(self, tenant: str, patient_ref: str, *, by: str, purpose: str) -> Erasure:
        """Erase a patient, or answer the erasure already made (see ``core``)."""
        latest = await store.latest_erasure(self.pool, tenant, patient_ref)
        since = latest.keys_destroyed_at if latest and latest.keys_destroyed_at else None
        data_since = since is not None and await store.data_since(
            self.pool, tenant, patient_ref, since
        )
        if core.needs_new_erasure(latest, data_since):
            latest = await store.start_erasure(
                self.pool,
                erasure_id=str(uuid6.uuid7()),
                tenant=tenant,
                patient_ref=patient_ref,
                by=by,
                purpose=purpose,
            )
        assert latest is not None
        return latest if latest.keys_destroyed else await self.carry_on(latest)

    async def carry_on(self, erasure: Erasure) -> Erasure:
        """Steps 2 and 3 of an erasure in progress."""
        reply = await keys_api.call(
            self.nc,
            keys_api.DestroyKeysRequest(
                tenant=erasure.tenant,
                patient_ref=erasure.patient_ref,
                purpose="personal",
                reason="erasure",
                since=erasure.requested_at,
            ),
        )
        # A first attempt that died after this point destroyed them: they are in ``gone`` too.
        keys = [key.key_id for key in reply.gone]
        for key_id in keys:
            self.keys.evict(erasure.tenant, key_id)
        at = min((key.destroyed_at for key in reply.gone), default=datetime.now(UTC))
        crash_point("erasure.after_keys_destroyed")
        return await self._erase_rows(erasure, keys, at)

    async def _erase_rows(self, erasure: Erasure, keys: list[str], at: datetime) -> Erasure:
        async with self.pool.acquire() as conn, conn.transaction():
            current = await store.locked_erasure(conn, erasure.erasure_id)
            if current.keys_destroyed:
                return current  # a concurrent request or the resumer finished it
            erased = await store.erase_own_rows(conn, erasure.tenant, erasure.patient_ref)
            now = datetime.now(UTC)
            await add_to_outbox(
                conn,
                ErasureRequested(
                    erasure_id=erasure.erasure_id,
                    patient_ref=erasure.patient_ref,
                    requested_at=erasure.requested_at,
                    destroyed_keys=keys,
                    keys_destroyed_at=at,
                ),
                source=SOURCE,
                tenant=erasure.tenant,
                key=erasure.patient_ref,
            )
            await add_to_outbox(
                conn,
                PatientDataErased(
                    erasure_id=erasure.erasure_id,
                    patient_ref=erasure.patient_ref,
                    holder=HOLDER,
                    erased=erased,
                    erased_at=now,
                ),
                source=SOURCE,
                tenant=erasure.tenant,
                key=erasure.patient_ref,
            )
            # Recorded at once too: the certificate answered now already shows it.
            await store.save_report(
                conn, erasure.erasure_id, HolderReport(holder=HOLDER, erased=erased, erased_at=now)
            )
            done = await store.keys_destroyed(conn, erasure.erasure_id, keys, at)
        log.info("erasure %s: %d personal key(s) destroyed", erasure.erasure_id, len(keys))
        return done


async def _resume(app: Litestar) -> None:
    eraser = Eraser(app.state.pool, app.state.bus.nc, app.state.bus.phi.keys)
    # At start, every erasure in progress (ours died with the process; another replica's, if
    # any, is finished once: the last step checks under a lock); then only abandoned ones.
    started = getattr(app.state, "erasures_resumed", False)
    app.state.erasures_resumed = True
    older_than = ABANDONED_AFTER_SECONDS if started else 0.0
    for erasure in await store.in_progress(app.state.pool, older_than):
        log.warning("erasure %s was left in progress; carrying it on", erasure.erasure_id)
        await eraser.carry_on(erasure)


# Erasures whose process died are carried on (at start, then every half minute).
RESUMER = every("erasure-resumer", RESUME_EVERY_SECONDS, _resume)
