"""The key service over core NATS request/reply (contract: ``shared.keys_api``).

One subscription per operation in the ``keys`` queue group, so replicas share the load; every
request gets an answer (keys sealed to the requester, or an error code), never silence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from services.keys.kek import KekError
from services.keys.service import KeyService
from shared import attributes as attr
from shared import keys_api as api
from shared.request_reply import serve
from shared.subjects import keys_request_subject
from shared.telemetry import extract, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

QUEUE = "keys"


class RefusedError(Exception):
    def __init__(self, code: api.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


async def for_sealing(service: KeyService, r: api.SealingKeyRequest) -> api.KeysReply:
    key = await service.for_sealing(r.tenant, r.patient_ref, r.purpose)
    return api.wrap_keys(r.reply_key, [key])


async def for_opening(service: KeyService, r: api.OpeningKeyRequest) -> api.KeysReply:
    key = await service.for_opening(r.tenant, r.key_id)
    if key is None:
        raise RefusedError("unknown_key", "no such live key for this tenant")
    return api.wrap_keys(r.reply_key, [key])


async def for_dispatch(service: KeyService, r: api.DispatchKeysRequest) -> api.KeysReply:
    keys = await service.for_dispatch(r.tenant, r.dispatch_id)
    if keys is None:
        raise RefusedError("dispatch_not_live", "not a live dispatch of this tenant")
    return api.wrap_keys(r.reply_key, keys)


async def destroy(service: KeyService, r: api.DestroyKeysRequest) -> api.KeysReply:
    destroyed = await service.destroy(r.tenant, r.patient_ref, r.purpose, r.reason)
    gone = (
        []
        if r.since is None
        else await service.destroyed_since(r.tenant, r.patient_ref, r.purpose, r.since)
    )
    return api.KeysReply(destroyed=destroyed, gone=gone)


HANDLERS: dict[str, Callable[[KeyService, Any], Awaitable[api.KeysReply]]] = {
    api.SealingKeyRequest.OPERATION: for_sealing,
    api.OpeningKeyRequest.OPERATION: for_opening,
    api.DispatchKeysRequest.OPERATION: for_dispatch,
    api.DestroyKeysRequest.OPERATION: destroy,
}
assert set(HANDLERS) == set(api.OPERATIONS), "every operation of the contract needs a handler"


async def answer(service: KeyService, operation: str, message: Msg) -> bytes:
    try:
        request = api.decode_request(operation, message.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        return api.encode_error("invalid_request", str(error))
    with _tracer.start_as_current_span(
        f"keys {operation}",
        context=extract(message.headers),
        kind=SpanKind.SERVER,
        attributes={
            attr.MESSAGING_SYSTEM: "nats",
            attr.MESSAGING_OPERATION: "process",
            attr.MESSAGING_DESTINATION: message.subject,
            attr.TENANT: request.tenant,
        },
    ):
        try:
            return api.encode_result(await HANDLERS[operation](service, request))
        except RefusedError as error:
            return api.encode_error(error.code, str(error))
        except KekError as error:
            log.error("keys %s: %s", operation, error)
            return api.encode_error("unavailable", "the key service cannot unwrap keys")
        except Exception:  # the caller gets "unavailable" (and waits), our log the traceback
            log.exception("keys request %s failed", operation)
            return api.encode_error("unavailable", "the key service failed; try again shortly")


async def serve_requests(app: Litestar) -> None:
    """Answer key requests on core NATS until cancelled."""
    nc, service = app.state.bus.nc, app.state.key_service

    async def respond(operation: str, message: Msg) -> bytes:
        return await answer(service, operation, message)

    await serve(nc, keys_request_subject, HANDLERS, respond, QUEUE)
