"""The baseline of the webhooks benchmark: what a user would build without MediAI.

A bare Litestar app with one route, ``POST /v1/webhooks/livekit``, that verifies LiveKit's
signature with livekit-api's ``WebhookReceiver`` (the JWT, its ``sha256`` claim against the raw
body, the protobuf JSON parse) and publishes the body as one JetStream message with nats-py's
``js.publish`` (``Nats-Msg-Id`` = the webhook id, so a retry is dropped), answering 200 after
JetStream's ack. Served by uvicorn exactly as ``mediai serve`` serves a service (uvloop,
httptools, no access log), on the same NATS, to a file-backed stream of its own with the same
duplicate window as MediAI's. No event schema, no tracing, no metrics: the floor.

Run: python -m bench.bare_webhooks HOST PORT (bench.webhooks_latency starts it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import nats
from litestar import Litestar, Request, Response, get, post
from livekit.api import TokenVerifier, WebhookReceiver
from nats.js.api import StorageType, StreamConfig

from bench.bare import serve
from shared.config import load_settings
from shared.streams import DUPLICATE_WINDOW_SECONDS

STREAM = "BARE_WEBHOOKS"
SUBJECT = "bare.webhooks"


def create_app(api_key: str, api_secret: str) -> Litestar:
    receiver = WebhookReceiver(TokenVerifier(api_key, api_secret))

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The stack's operator login, from bench.token_throughput.start_bare (the bench's
        # plumbing; a user's app would have a NATS user of its own).
        nc = await nats.connect(
            os.environ["BARE_NATS_URL"],
            user=os.environ["BARE_NATS_USER"],
            password=os.environ["BARE_NATS_PASSWORD"],
        )
        app.state.js = nc.jetstream()
        await app.state.js.add_stream(
            StreamConfig(
                name=STREAM,
                subjects=[f"{SUBJECT}.>"],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
        )
        try:
            yield
        finally:
            await nc.drain()

    @post("/v1/webhooks/livekit", status_code=200)
    async def receive(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        body = await request.body()
        try:
            hook = receiver.receive(body.decode(), request.headers.get("authorization", ""))
        except Exception:  # noqa: BLE001 - the receiver signals a bad signature with bare Exception
            return Response({"error": "invalid signature"}, status_code=401)
        await request.app.state.js.publish(
            f"{SUBJECT}.{hook.event}", body, headers={"Nats-Msg-Id": hook.id}
        )
        return Response({"webhookId": hook.id})

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return Litestar(route_handlers=[receive, healthz], lifespan=[lifespan], debug=False)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    settings = load_settings(env_file=None)
    app = create_app(settings.livekit_api_key, settings.livekit_api_secret)
    serve(app, host, port)


if __name__ == "__main__":
    main()
