"""The baseline of the token benchmark: what a user would build without MediAI.

A bare Litestar app with one route, ``POST /v1/tokens``, that validates the same request body
and mints the same LiveKit JWT as the token service (same grants, attributes, TTL), served by
uvicorn exactly as ``mediai serve`` serves a service (uvloop, httptools, no access log). No API
keys, no tracing, no metrics: the floor MediAI's token path is compared with.

With ``--audit`` it also does what MediAI's guarantee costs, the way a user would write it with
nats-py: one JSON record of the token published to the same JetStream stream (the event
subject of ``token_issued``, a message id for deduplication), answering only once JetStream has
acknowledged it; on one NATS node that fsyncs every write, that acknowledgement is the floor of
any durable token path on the machine.

Run: python -m bench.bare_token HOST PORT [--audit] (bench.token_throughput starts it; with
``--audit``, the NATS URL and the stack's operator login from BARE_NATS_URL, BARE_NATS_USER,
BARE_NATS_PASSWORD).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import msgspec
import nats
from litestar import Litestar, get, post
from livekit import api as livekit_api
from nats.js import JetStreamContext

from bench.bare import serve
from shared.config import load_settings
from shared.participants import PATIENT, ROLE_ATTRIBUTE


class CreateTokenRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    room: str
    identity: str
    name: str | None = None
    can_publish: bool = True
    can_subscribe: bool = True


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    token: str
    ws_url: str


def create_app(
    api_key: str, api_secret: str, ws_url: str, tenant: str, audit: bool = False
) -> Litestar:
    jetstream: list[JetStreamContext] = []

    @asynccontextmanager
    async def connected(_: Litestar) -> AsyncIterator[None]:
        if not audit:
            yield
            return
        nc = await nats.connect(
            os.environ["BARE_NATS_URL"],
            user=os.environ["BARE_NATS_USER"],
            password=os.environ["BARE_NATS_PASSWORD"],
        )
        jetstream.append(nc.jetstream())
        yield
        await nc.close()

    @post("/v1/tokens")
    async def create_token(data: CreateTokenRequest) -> TokenResponse:
        grants = livekit_api.VideoGrants(
            room_join=True,
            room=f"{tenant}~{data.room}",
            can_publish=data.can_publish,
            can_subscribe=data.can_subscribe,
            can_publish_data=data.can_publish,
            can_update_own_metadata=False,
        )
        jwt = (
            livekit_api.AccessToken(api_key, api_secret)
            .with_identity(data.identity)
            .with_name(data.name or data.identity)
            .with_attributes({ROLE_ATTRIBUTE: PATIENT})
            .with_ttl(timedelta(hours=1))
            .with_grants(grants)
            .to_jwt()
        )
        if jetstream:
            record = {"type": "token_issued", "room": data.room, "identity": data.identity}
            await jetstream[0].publish(
                f"mediai.events.token.issued.v1.{tenant}.{data.room}",
                json.dumps(record).encode(),
                headers={"Nats-Msg-Id": uuid.uuid4().hex},
            )
        return TokenResponse(token=jwt, ws_url=ws_url)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return Litestar(route_handlers=[create_token, healthz], lifespan=[connected], debug=False)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    settings = load_settings(env_file=None)
    app = create_app(
        settings.livekit_api_key,
        settings.livekit_api_secret,
        settings.livekit_url,
        "tbare000000",
        audit="--audit" in sys.argv[3:],
    )
    serve(app, host, port)


if __name__ == "__main__":
    main()
