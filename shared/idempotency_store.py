"""The ``idempotency_keys`` table behind ``shared.idempotency``: what a keyed request finds under
its key (a pure rule), taking the key, keeping the answer, pruning expired keys."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Literal

import asyncpg
import msgspec

from shared.db import Connection

log = logging.getLogger(__name__)

RETENTION = timedelta(hours=24)
# A request still 'running' after this long was left by a process that died: the next retry
# takes it over (the ids it derives make running it twice harmless).
ABANDONED_AFTER = timedelta(seconds=60)
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class KeyedRequest(msgspec.Struct, frozen=True):
    """A request carrying an idempotency key: whose, for which operation, which key."""

    tenant: str
    route: str  # method and route template: "POST /v1/agents"
    key: str


class Answer(msgspec.Struct, frozen=True):
    """An HTTP answer as kept: status, the headers worth replaying, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Claimed(msgspec.Struct, frozen=True):
    """The key is this request's to run: ``claim`` proves it, ``seed`` derives its ids."""

    claim: uuid.UUID
    seed: uuid.UUID


Verdict = Literal["fresh", "retry", "mismatch", "in_use", "replay"]


def request_hash(path: str, query: bytes, body: bytes) -> str:
    """What makes two requests "the same": path, query and body, the body as canonical JSON
    (key order and spacing do not matter); a body that is not JSON counts byte for byte."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def verdict(
    *, stored_hash: str, state: str, expired: bool, abandoned: bool, asked_hash: str
) -> Verdict:
    """What a request finds under a key already taken: expired, it is a new request (fresh
    seed); another request is a mismatch; the same one runs again (same seed) if it failed or
    was abandoned by a process that died, is in use while it runs, replayed once done."""
    if expired:
        return "fresh"
    if stored_hash != asked_hash:
        return "mismatch"
    if state == "failed" or (state == "running" and abandoned):
        return "retry"
    return "in_use" if state == "running" else "replay"


async def claim(
    pool: asyncpg.Pool, keyed: KeyedRequest, asked_hash: str
) -> Claimed | Answer | Literal["mismatch", "in_use"]:
    """Take the key for this request; or the answer to replay; or why it cannot run."""
    where = (keyed.tenant, keyed.route, keyed.key)
    for _ in range(3):  # a row changed between two statements: look again
        mine, seed = uuid.uuid4(), uuid.uuid4()
        inserted = await pool.fetchval(
            "INSERT INTO idempotency_keys (tenant_id, route, key, request_hash, seed, claim)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
            *where,
            asked_hash,
            seed,
            mine,
        )
        if inserted:
            return Claimed(mine, seed)
        row = await pool.fetchrow(
            "SELECT request_hash, state, seed, claim, status_code, headers, body,"
            " created_at < now() - $4::interval AS expired,"
            " claimed_at < now() - $5::interval AS abandoned"
            " FROM idempotency_keys WHERE tenant_id = $1 AND route = $2 AND key = $3",
            *where,
            RETENTION,
            ABANDONED_AFTER,
        )
        if row is None:
            continue
        found = verdict(
            stored_hash=row["request_hash"],
            state=row["state"],
            expired=row["expired"],
            abandoned=row["abandoned"],
            asked_hash=asked_hash,
        )
        if found in ("mismatch", "in_use"):
            return found
        if found == "replay":
            headers = [(name, value) for name, value in row["headers"]]
            return Answer(row["status_code"], headers, bytes(row["body"]))
        seed = seed if found == "fresh" else row["seed"]
        taken = await pool.fetchval(
            "UPDATE idempotency_keys SET request_hash = $4, state = 'running', seed = $5,"
            " claim = $6, status_code = NULL, headers = NULL, body = NULL, claimed_at = now(),"
            " created_at = CASE WHEN $8 THEN now() ELSE created_at END"
            " WHERE tenant_id = $1 AND route = $2 AND key = $3 AND claim = $7 RETURNING true",
            *where,
            asked_hash,
            seed,
            mine,
            row["claim"],
            found == "fresh",
        )
        if taken:
            return Claimed(mine, seed)
    return "in_use"


async def finish(
    pool: asyncpg.Pool,
    keyed: KeyedRequest,
    claimed: Claimed,
    answer: Answer | None,
    *,
    patient_ref: str = "",
) -> None:
    """Keep the answer (about ``patient_ref``, when the handler named one); or (None: a 5xx or
    a crash) mark the run failed, keeping no answer, so a retry runs again with the same seed."""
    where = (keyed.tenant, keyed.route, keyed.key)
    try:
        if answer is None:
            await pool.execute(
                "UPDATE idempotency_keys SET state = 'failed'"
                " WHERE tenant_id = $1 AND route = $2 AND key = $3 AND claim = $4",
                *where,
                claimed.claim,
            )
        else:
            await pool.execute(
                "UPDATE idempotency_keys SET state = 'done', status_code = $5, headers = $6,"
                " body = $7, patient_ref = $8"
                " WHERE tenant_id = $1 AND route = $2 AND key = $3 AND claim = $4",
                *where,
                claimed.claim,
                answer.status,
                [list(header) for header in answer.headers],
                answer.body,
                patient_ref,
            )
    except _DATABASE_ERRORS as error:
        # The row stays 'running' until it counts as abandoned; a retry then runs again.
        log.warning("idempotency key on %s not settled: %s", keyed.route, type(error).__name__)


async def forget_patient(conn: Connection, tenant: str, patient_ref: str) -> int:
    """Delete the kept answers about a patient (an erasure); returns how many. A retry with
    one of their keys runs again, and finds what it created (its ids derive from the key)."""
    status = await conn.execute(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND patient_ref = $2",
        tenant,
        patient_ref,
    )
    return int(status.rsplit(" ", 1)[1])


async def prune(pool: asyncpg.Pool) -> int:
    """Delete the keys older than the retention; returns how many."""
    deleted: int = await pool.fetchval(
        "WITH gone AS (DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval"
        " RETURNING 1) SELECT count(*) FROM gone",
        RETENTION,
    )
    return deleted
