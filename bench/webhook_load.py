"""Open-loop load of signed LiveKit webhooks at a fixed rate, as LiveKit sends them.

Webhook ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones (LiveKit does
not wait for our answer before the next event), each on an idle keep-alive connection or a new
one; its latency runs from when it was due to the end of the answer, so time spent queued, in
the server or here, counts. The webhooks are signed before the clock starts, and the client is
a few lines on asyncio streams under uvloop (a general-purpose client costs several times the
CPU per request, on the same two cores as the servers it measures). How late the sends were
against their schedule, and this process's CPU per webhook, are reported too: when the lag
grows, this process is the limit.

Run: python -m bench.webhook_load URL RATE SECONDS (bench.webhooks_latency runs it; one JSON
line out). The LiveKit key and secret come from the environment, as for the services.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit

import uvloop
from google.protobuf.json_format import MessageToJson
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from services.webhooks.signing import sign
from shared.config import load_settings

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
IDLE_SECONDS = 3.0


def signed_request(host: str, path: str, key: str, secret: str) -> bytes:
    """One HTTP/1.1 request carrying a fresh ``participant_joined`` webhook, signed."""
    hook = WebhookEvent(
        event="participant_joined",
        id=f"EV_{secrets.token_hex(8)}",
        created_at=int(time.time()),
        room=models.Room(sid="RM_bench", name="tbench00000~bench"),
        participant=models.ParticipantInfo(sid=f"PA_{secrets.token_hex(4)}", identity="p"),
    )
    body = MessageToJson(hook).encode()
    token = sign(body, key, secret, ttl=timedelta(minutes=30))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/webhook+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(stream: Stream, request: bytes) -> int:
    """Send one request on a keep-alive connection and read its whole answer; its status."""
    reader, writer = stream
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def drive(url: str, rate: float, seconds: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    settings = load_settings(env_file=None)
    key, secret = settings.livekit_api_key, settings.livekit_api_secret
    requests = [
        signed_request(parts.netloc, parts.path, key, secret) for _ in range(int(rate * seconds))
    ]
    # Idle connections, the most recently used last, each with when it was last used: one idle
    # longer than the servers keep it (5 s, uvicorn and Caddy) is closed here rather than
    # reused and found closed, which would count as the server's error.
    idle: list[tuple[Stream, float]] = []
    for _ in range(16):
        idle.append((await asyncio.open_connection(host, port), time.perf_counter()))
    latencies: list[float] = []
    lags: list[float] = []
    errors: Counter[str] = Counter()

    async def connection() -> Stream:
        while idle:
            stream, used = idle.pop()
            if time.perf_counter() - used < IDLE_SECONDS:
                return stream
            stream[1].close()
        return await asyncio.open_connection(host, port)

    async def one(request: bytes, due: float) -> None:
        stream = None
        try:
            stream = await connection()
            status = await exchange(stream, request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            errors[type(error).__name__] += 1
            if stream is not None:
                stream[1].close()
            return
        latencies.append(time.perf_counter() - due)
        idle.append((stream, time.perf_counter()))
        if status != 200:
            errors[str(status)] += 1

    cpu = time.process_time()
    start = time.perf_counter() + 0.05
    pending = []
    for i, request in enumerate(requests):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        lags.append(time.perf_counter() - due)
        pending.append(asyncio.create_task(one(request, due)))
    sent = time.perf_counter()
    await asyncio.gather(*pending)
    finished = time.perf_counter()
    cpu = time.process_time() - cpu
    for (_, writer), _ in idle:
        writer.close()
    ordered = sorted(latencies)
    lags.sort()
    return {
        "rate": len(requests) / (sent - start),
        "answered_per_s": len(latencies) / (finished - start),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p90_ms": percentile(ordered, 0.90) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000 if ordered else float("nan"),
        "webhooks": len(requests),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "send_lag_p99_ms": percentile(lags, 0.99) * 1000,
        "client_cpu_ms_per_webhook": cpu * 1000 / max(len(requests), 1),
    }


def main() -> None:
    url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(uvloop.run(drive(url, rate, seconds))), flush=True)


if __name__ == "__main__":
    main()
