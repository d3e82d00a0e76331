"""Idempotent creation: every POST that creates something honours an ``Idempotency-Key`` header.

The first request with a key runs, and its answer is kept in PostgreSQL for 24 hours, scoped per
tenant and operation. The same key with the same request (path, query and canonical JSON body)
answers that answer again, marked ``Idempotent-Replayed: true``, and creates nothing; with
another request it is a 422 ``idempotency_key_mismatch``; while the first still runs, a 409
``idempotency_key_in_use``. A 5xx answer is not kept: the retry runs again. For that retry not to
create a second thing when the first one's effect did land (NATS stored the event but the ack
was lost), a handler names what it creates with ``RequestIds``: ids derived from a seed the key
keeps across retries, so the retry names the same resource and republishes the same event ids,
which JetStream's duplicate window and the consumers' inboxes drop. Once the key has expired,
it is a new request with a new seed.

A route opts in with ``idempotent(handler, ...)`` among the app's route handlers; a handler that
creates takes ``ids: RequestIds``. Each service runs ``KEY_PRUNER`` among its background
tasks. The table is ``shared.idempotency_store``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Router
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from shared import idempotency_store as store
from shared import leases
from shared.background import every
from shared.contract import ErrorBody, ErrorDetail, merged
from shared.events import new_event_id
from shared.http import RETRY_AFTER_SECONDS
from shared.tenants import ApiKeys, Tenant
from shared.viewtokens import ViewTokenError, is_view_token, verify

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[!-~]{1,255}$"
KEY_RULE = "1 to 255 visible ASCII characters, no spaces (a UUID is a good key)"
PRUNE_EVERY_SECONDS = 600.0
_KEY = re.compile(KEY_PATTERN)
_KEPT_HEADERS = ("content-type", "location")
_ERRORS = {
    400: ("invalid_idempotency_key", f"the {HEADER} header must be {KEY_RULE}"),
    409: ("idempotency_key_in_use", f"a request with this {HEADER} is still running; retry later"),
    422: ("idempotency_key_mismatch", f"this {HEADER} was used with another request"),
}
# The same answer as any handler's when PostgreSQL is away (shared.http).
_UNAVAILABLE = ("dependency_unavailable", "postgres is unavailable; retry shortly")
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class RequestIds:
    """Ids for what a request creates: derived from its key's seed when it sent an
    ``Idempotency-Key`` (every retry names the same things), fresh UUIDv7s otherwise."""

    def __init__(self, key: str | None = None, seed: uuid.UUID | None = None) -> None:
        self.key = key
        self._seed = seed
        # The patient the answer is about (``about``): kept with it, so an erasure finds it.
        self.patient_ref = ""

    def about(self, patient_ref: str) -> None:
        """Say that the answer is about this patient (it may repeat their personal data): the
        kept answer is deleted when the patient is erased."""
        self.patient_ref = patient_ref

    def id(self, purpose: str) -> str:
        """The id of one thing the request creates (``purpose`` tells the things apart:
        "dispatch", "dispatch-requested"...)."""
        if self._seed is None:
            return new_event_id()
        return str(uuid.uuid5(self._seed, purpose))


async def _prune(app: Litestar) -> None:
    if deleted := await store.prune(app.state.pool):
        log.info("pruned %d expired idempotency keys", deleted)


# Each service that takes keys runs it among its background tasks.
KEY_PRUNER = every(
    "idempotency-key-pruner", PRUNE_EVERY_SECONDS, leases.elected(leases.IDEMPOTENCY_PRUNER, _prune)
)


# --- the middleware ----------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _send(send: Send, answer: store.Answer, *extra: tuple[bytes, bytes]) -> None:
    headers = [(name.encode(), value.encode()) for name, value in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": [*headers, *extra]}
    )
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


def _refusal(status: int) -> store.Answer:
    """The middleware's own answers, as ``shared.http`` would give them."""
    code, message = _UNAVAILABLE if status == 503 else _ERRORS[status]
    details = [{"dependency": "postgres"}] if status == 503 else None
    error = ErrorDetail(code=code, message=message, details=details)
    body = msgspec.json.encode(ErrorBody(error=error))
    headers = [("content-type", "application/json")]
    if status == 503:  # like every 503 of the services: when to try again
        headers.append(("retry-after", str(RETRY_AFTER_SECONDS)))
    return store.Answer(status, headers, body)


async def _unavailable(send: Send, error: Exception) -> None:
    log.warning("idempotency key not taken: %s", type(error).__name__)
    await _send(send, _refusal(503))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Recorder:
    """Holds the handler's answer until it is kept, so no client sees an answer that its
    retry would not find."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    def answer(self) -> store.Answer:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in start.get("headers", [])
        ]
        body = b"".join(
            bytes(m.get("body", b"")) for m in self.messages if m["type"] == "http.response.body"
        )
        kept = [(name, value) for name, value in headers if name in _KEPT_HEADERS]
        return store.Answer(start["status"], kept, body)

    async def forward(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


async def _caller(scope: Scope, credential: str) -> Tenant | None:
    """Whose key it is: an API key's tenant (through the app's key cache), or a valid view
    token's (the handler's own ``tenant`` dependency still checks what the view token allows)."""
    if not is_view_token(credential):
        api_keys: ApiKeys = scope["app"].state.api_keys
        return await api_keys.tenant(credential)
    secret = scope["app"].state.settings.view_token_secret
    try:
        grant = verify(credential, secret, now=time.time())
    except ViewTokenError:
        return None
    return Tenant(id=grant.tenant, name=grant.tenant_name, grant=grant)


class IdempotencyMiddleware(ASGIMiddleware):
    """Takes the key before the handler runs, keeps the answer (or marks the run failed) after;
    see the module."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        key = _header(scope, b"idempotency-key")
        if key is None:
            await next_app(scope, receive, send)
            return
        if not _KEY.fullmatch(key):
            await _send(send, _refusal(400))
            return
        pool: asyncpg.Pool = scope["app"].state.pool
        scheme, _, credential = (_header(scope, b"authorization") or "").partition(" ")
        try:
            tenant = (
                await _caller(scope, credential.strip()) if scheme.lower() == "bearer" else None
            )
        except _DATABASE_ERRORS as error:
            await _unavailable(send, error)
            return
        body = await _read_body(receive) if tenant is not None else None
        if tenant is None or body is None:
            await next_app(scope, receive, send)  # 401 from the handler, or nobody to answer
            return
        http: Any = scope  # an HTTP scope, routed: it has a method and a path template
        keyed = store.KeyedRequest(tenant.id, f"{http['method']} {http['path_template']}", key)
        asked = store.request_hash(scope["path"], scope.get("query_string", b""), body)
        try:
            claimed = await store.claim(pool, keyed, asked)
        except _DATABASE_ERRORS as error:
            await _unavailable(send, error)
            return
        if isinstance(claimed, store.Answer):
            await _send(send, claimed, (REPLAYED_HEADER.lower().encode(), b"true"))
            return
        if isinstance(claimed, str):
            await _send(send, _refusal(422 if claimed == "mismatch" else 409))
            return
        ids = RequestIds(key, claimed.seed)
        http.setdefault("state", {})["idempotency"] = ids
        given = False

        async def receive_body() -> ReceiveMessage:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        recorder = _Recorder()
        try:
            await next_app(scope, receive_body, recorder.send)
        except BaseException:
            await store.finish(pool, keyed, claimed, None)
            raise
        answer = recorder.answer()
        kept = None if answer.status >= 500 else answer
        await store.finish(pool, keyed, claimed, kept, patient_ref=ids.patient_ref)
        await recorder.forward(send)


# --- opting in ---------------------------------------------------------------------------------


def _provide_ids(request: Request[Any, Any, Any]) -> RequestIds:
    ids: RequestIds = request.state.get("idempotency") or RequestIds()
    return ids


def _with_key_errors(responses: Mapping[int, ResponseSpec] | None) -> dict[int, ResponseSpec]:
    """An operation's error answers plus the key's."""
    return merged(responses, {status: {code: why} for status, (code, why) in _ERRORS.items()})


def idempotent(*handlers: HTTPRouteHandler) -> Router:
    """The handlers with ``Idempotency-Key`` honoured: the middleware, the ``ids``
    dependency, and the header and its error answers in their OpenAPI operations."""
    for handler in handlers:
        handler.responses = _with_key_errors(handler.responses)
    return Router(
        path="/",
        route_handlers=list(handlers),
        middleware=[IdempotencyMiddleware()],
        dependencies={"ids": Provide(_provide_ids, sync_to_thread=False)},
        parameters={
            "idempotency_key": HeaderParameter(
                annotation=str,
                name=HEADER,
                required=False,
                pattern=KEY_PATTERN,
                description=f"Makes a retry safe: {KEY_RULE}. The same key and request within "
                f"24 hours answer the first answer again (with `{REPLAYED_HEADER}: true`) and "
                "create nothing; the same key with another request is a 422, while the first "
                "runs a 409. 5xx answers are not kept: a retry runs again, and names the same "
                "resources.",
            )
        },
    )
