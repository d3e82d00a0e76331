"""The baseline of the token benchmark: what a user would build without MediAI.

A bare Litestar app with one route, ``POST /v1/tokens``, that validates the same request body
and mints the same LiveKit JWT as the token service (same grants, attributes, TTL), served by
uvicorn exactly as ``mediai serve`` serves a service (uvloop, httptools, no access log). No API
keys, no audit event, no tracing, no metrics: the floor MediAI's token path is compared with.

Run: python -m bench.bare_token HOST PORT (bench.token_throughput starts it).
"""

from __future__ import annotations

import sys
from datetime import timedelta

import msgspec
import uvicorn
from litestar import Litestar, get, post
from livekit import api as livekit_api

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


def create_app(api_key: str, api_secret: str, ws_url: str, tenant: str) -> Litestar:
    @post("/v1/tokens", sync_to_thread=False)
    def create_token(data: CreateTokenRequest) -> TokenResponse:
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
        return TokenResponse(token=jwt, ws_url=ws_url)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return Litestar(route_handlers=[create_token, healthz], debug=False)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    settings = load_settings(env_file=None)
    app = create_app(
        settings.livekit_api_key, settings.livekit_api_secret, settings.livekit_url, "tbare000000"
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
