"""How fast the webhooks service answers LiveKit: verify, publish to JetStream, 2xx.

Starts a stack with the webhooks service only (NATS, Postgres, LiveKit, gateway), then sends
signed webhooks as LiveKit does: one at a time (latency) and many at once (throughput), through
the gateway and straight to the service, plus the same webhook again (a retry JetStream drops).

Run: uv run python -m bench.webhooks_latency [--count 500]. Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from google.protobuf.json_format import MessageToJson
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from deploy.stack import Stack
from services.webhooks.signing import sign
from tests.support import stack_settings


def signed(key: str, secret: str, hook_id: str | None = None) -> tuple[bytes, str]:
    hook = WebhookEvent(
        event="participant_joined",
        id=hook_id or f"EV_{secrets.token_hex(6)}",
        created_at=int(time.time()),
        room=models.Room(sid="RM_bench", name="tbench00000~bench"),
        participant=models.ParticipantInfo(sid=f"PA_{secrets.token_hex(4)}", identity="p"),
    )
    body = MessageToJson(hook).encode()
    return body, sign(body, key, secret)


async def timed(client: httpx.AsyncClient, url: str, body: bytes, token: str) -> float:
    began = time.perf_counter()
    answer = await client.post(url, content=body, headers={"Authorization": token})
    assert answer.status_code == 200, answer.text
    return (time.perf_counter() - began) * 1000


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (
        f"  {name:<34} median {statistics.median(ordered):6.2f} ms  p95 {p95:6.2f} ms  "
        f"p99 {p99:6.2f} ms  max {ordered[-1]:6.2f} ms"
    )


async def main(count: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    settings = stack_settings(data_dir)
    stack = Stack(settings, services=["webhooks"])
    await stack.start()
    try:
        key, secret = settings.livekit_api_key, settings.livekit_api_secret
        gateway = f"{settings.gateway_url}/v1/webhooks/livekit"
        direct = f"http://{settings.host}:{settings.webhooks_port}/v1/webhooks/livekit"
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(20):  # warm up connections and code paths
                await timed(client, gateway, *signed(key, secret))
            through_gateway = [
                await timed(client, gateway, *signed(key, secret)) for _ in range(count)
            ]
            to_service = [await timed(client, direct, *signed(key, secret)) for _ in range(count)]
            body, token = signed(key, secret, hook_id="EV_bench_retry")
            retries = [await timed(client, gateway, body, token) for _ in range(count)]
            batch = [signed(key, secret) for _ in range(count)]
            began = time.perf_counter()
            await asyncio.gather(*(timed(client, gateway, b, t) for b, t in batch))
            rate = count / (time.perf_counter() - began)
        print(f"webhooks service, {count} signed webhooks each (one at a time unless noted):")
        print(summary("through the gateway", through_gateway))
        print(summary("straight to the service", to_service))
        print(summary("the same webhook again (dedup)", retries))
        print(f"  {count} at once through the gateway: {rate:.0f} webhooks/s")
    finally:
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    asyncio.run(main(parser.parse_args().count))
