"""Signing webhooks the way LiveKit does, for tests, benchmarks and replaying a webhook by hand."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

from livekit import api as livekit_api


def sign(body: bytes, api_key: str, api_secret: str, ttl: timedelta = timedelta(minutes=5)) -> str:
    """The ``Authorization`` header LiveKit sends with ``body``: a JWT issued by ``api_key``
    whose ``sha256`` claim is the body's hash."""
    return (
        livekit_api.AccessToken(api_key, api_secret)
        .with_ttl(ttl)
        .with_sha256(base64.b64encode(hashlib.sha256(body).digest()).decode())
        .to_jwt()
    )
