"""Read endpoints through the gateway: MediAI's services against a bare app with the same SQL.

Starts a stack with the dispatcher, rooms, scheduling, billing and sessions (NATS, Postgres,
LiveKit, the key service, the gateway) as ``mediai up`` does, tracing on (exported over OTLP to
a sink in this process at ``--sample-ratio``) and the Prometheus metrics on, and makes what is
read, through the API where the API makes it: ``--dispatches`` dispatches in one room (no agent
workers: a worker host's load report on the bus gives the dispatcher room, as in the fault
suite), a consultation room for a patient (its metadata sealed with the patient's key), a doctor
and an appointment with the patient's name, contact and reason (sealed; each read of them is
recorded as an access event), the timeline of one of the dispatches (the sessions service's
projection of the log), and ``--usage-events`` usage-bearing events of this month
published to the stream and projected by billing. Then the bare app (``bench.bare_reads``: the
same tables, the same SQL; no API key, no tracing, no metrics, no sealing) behind a second Caddy
running the same Caddyfile. For each endpoint (``ENDPOINTS``), bombardier with ``--connections``
clients for ``--duration`` seconds per run, MediAI and bare interleaved with the order
alternating, after a warm-up of each: requests/s, p50/p90/p99, errors, CPU per request of each
process a side runs on, the ratio, and a JSON record.

Run: uv run python -m bench.read_throughput [--runs 3] [--duration 8] [--connections 64]
[--only room,usage].
Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec

from bench.records import RESULTS, write_record
from bench.replay_events import consultations, publish
from bench.token_throughput import (
    Side,
    bombardier,
    load,
    median_side,
    row,
    start_bare,
)
from bench.traced import traced_stack
from services.billing.consumers import USAGE_PROJECTION
from services.billing.periods import month_name
from shared.bus import connect_bus
from shared.config import Settings
from shared.tenants import authenticate
from tests.faults.support import report_room_for_dispatches
from tests.support import eventually
from tests.test_scheduling_http import free_slots, new_doctor

ROOM = "consulta-leitura"
SERVICES = ["dispatcher", "rooms", "scheduling", "billing", "sessions"]
# Each endpoint's name, with the service it reads from (for the CPU per request).
ENDPOINTS = {
    "agent": ("GET /v1/agents/{id}", "dispatcher"),
    "agents": ("GET /v1/agents?room=", "dispatcher"),
    "room": ("GET /v1/rooms/{name}", "rooms"),
    "appointment": ("GET /v1/appointments/{id}", "scheduling"),
    "usage": ("GET /v1/usage", "billing"),
    "sessions": ("GET /v1/sessions", "sessions"),
    "timeline": ("GET /v1/sessions/{id}/timeline", "sessions"),
}


async def dispatches(api: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` dispatches in ROOM, made through the API: their ids."""
    made = []
    for _ in range(count):
        answer = await api.post("/v1/agents", json={"room": ROOM, "role": "generic"})
        answer.raise_for_status()
        made.append(answer.json()["id"])
    return made


async def timeline_shown(api: httpx.AsyncClient, dispatch_id: str) -> None:
    """Wait until the sessions service has projected the dispatch's timeline."""

    async def shown() -> bool:
        answer = await api.get(f"/v1/sessions/{dispatch_id}/timeline")
        return answer.status_code == 200 and bool(answer.json()["entries"])

    await eventually(shown, timeout=30, step=0.2)


async def consultation_room(api: httpx.AsyncClient) -> None:
    """A patient's consultation room, through the API, once the rooms service shows it."""
    body = {"name": ROOM, "patientRef": "paciente-leitura", "metadata": '{"motivo": "retorno"}'}
    (await api.post("/v1/rooms", json=body)).raise_for_status()

    async def shown() -> bool:
        return (await api.get(f"/v1/rooms/{ROOM}")).status_code == 200

    await eventually(shown, timeout=30, step=0.2)


async def appointment(api: httpx.AsyncClient) -> str:
    """A doctor and a booked appointment with the patient's name, contact and reason: its id."""
    doctor = await new_doctor(api)  # the scheduling tests' doctor, open every day
    [slot] = await free_slots(api, doctor["id"], limit=1)
    booked = await api.post(
        "/v1/appointments",
        json={
            "doctorId": doctor["id"],
            "startsAt": slot["startsAt"],
            "patientRef": "paciente-leitura",
            "patientName": "Maria da Silva",
            "patientContact": "+55 11 91234-5678",
            "reason": "dor no peito ao subir escadas",
        },
    )
    booked.raise_for_status()
    made: str = booked.json()["id"]
    return made


async def usage(settings: Settings, tenant: str, count: int) -> None:
    """``count`` usage-bearing events of this month in the stream, once billing projected them."""
    zone = ZoneInfo(settings.billing_timezone)
    bus = await connect_bus(settings, "bench", streams="skip")
    try:
        month = month_name(datetime.now(UTC), zone)
        await publish(bus, consultations(count, zone, month), count, tenant=tenant)

        async def projected() -> bool:
            info = await bus.js.consumer_info(USAGE_PROJECTION.stream, USAGE_PROJECTION.durable)
            return not info.num_pending and not info.num_ack_pending

        await eventually(projected, timeout=120, step=0.5)
    finally:
        await bus.close()


async def main(
    runs: int,
    duration: float,
    connections: int,
    count: int,
    usage_events: int,
    sample_ratio: float,
    only: list[str],
    output: Path,
) -> None:
    bombardier()
    async with traced_stack(
        SERVICES, sample_ratio=sample_ratio, agent_pool_min=0, agent_pool_max=0
    ) as (settings, stack, state):
        key = state.dev_api_key
        assert key is not None
        connection = await asyncpg.connect(settings.database_url)
        try:
            tenant = await authenticate(connection, key)  # type: ignore[arg-type]
        finally:
            await connection.close()
        assert tenant is not None
        await report_room_for_dispatches(settings)
        async with httpx.AsyncClient(
            base_url=state.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            ids = await dispatches(api, count)
            await timeline_shown(api, ids[0])
            await consultation_room(api)
            appointment_id = await appointment(api)
        await usage(settings, tenant.id, usage_events)
        bare = await start_bare(
            stack,
            settings,
            "bare",
            tenant.id,
            module="bench.bare_reads",
            services=tuple(SERVICES),
        )
        pids = {p.name: p.process.pid for p in stack.supervisor.parts if p.process}
        paths = {
            "agent": f"/v1/agents/{ids[0]}",
            "agents": f"/v1/agents?room={ROOM}",
            "room": f"/v1/rooms/{ROOM}",
            "appointment": f"/v1/appointments/{appointment_id}",
            "usage": "/v1/usage",
            "sessions": "/v1/sessions",
            "timeline": f"/v1/sessions/{ids[0]}/timeline",
        }
        record_endpoints: dict[str, object] = {}
        for short in only:
            endpoint, service = ENDPOINTS[short]
            # The processes each side runs on: its server, its gateway, PostgreSQL, and NATS
            # (MediAI's reads of personal data record an access event).
            gateways = {
                "mediai": (
                    state.gateway_url,
                    {
                        "server": pids[service],
                        "gateway": pids["gateway"],
                        "postgres": pids["postgres"],
                        "nats": pids["nats"],
                    },
                ),
                "bare": (
                    bare,
                    {
                        "server": pids["bare"],
                        "gateway": pids["gateway-bare"],
                        "postgres": pids["postgres"],
                        "nats": pids["nats"],
                    },
                ),
            }

            async def run(
                name: str,
                seconds: float,
                path: str = paths[short],
                sides: dict[str, tuple[str, dict[str, int]]] = gateways,
            ) -> Side:
                url, side_pids = sides[name]
                return await load(
                    url + path, key, side_pids, seconds, connections, method="GET", body=""
                )

            for name in gateways:  # warm-up
                await run(name, min(duration, 3))
            results: dict[str, list[Side]] = {"mediai": [], "bare": []}
            for number in range(runs):
                for name in ("mediai", "bare") if number % 2 == 0 else ("bare", "mediai"):
                    results[name].append(await run(name, duration))
            ratios = [
                m.rps / b.rps for m, b in zip(results["mediai"], results["bare"], strict=True)
            ]
            medians = {name: median_side(sides) for name, sides in results.items()}
            print(
                f"\n{endpoint} ({service}), {connections} connections, "
                f"{duration:.0f} s x {runs} runs (medians):"
            )
            for name in ("mediai", "bare"):
                print(row(name, medians[name]))
            print(
                f"  ratio MediAI / bare (req/s): median {statistics.median(ratios):.2f}"
                f" (runs: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            record_endpoints[endpoint] = {
                "service": service,
                "ratio_rps_median": statistics.median(ratios),
                "ratios_rps": ratios,
                "median": {name: msgspec.to_builtins(side) for name, side in medians.items()},
            }
        write_record(
            output,
            {
                "benchmark": "read_throughput",
                "connections": connections,
                "duration_seconds": duration,
                "runs": runs,
                "dispatches_in_room": count,
                "usage_events": usage_events,
                "trace_sample_ratio": sample_ratio,
                "endpoints": record_endpoints,
            },
        )
        print(f"record: {output}")


def endpoint_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ENDPOINTS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown endpoint {', '.join(unknown)}; one of {', '.join(ENDPOINTS)}"
        )
    return names


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--dispatches", type=int, default=20)
    parser.add_argument("--usage-events", type=int, default=20_000)
    parser.add_argument(
        "--only", type=endpoint_names, default=list(ENDPOINTS), help=", ".join(ENDPOINTS)
    )
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="MEDIAI_TRACE_SAMPLE_RATIO")
    parser.add_argument("--output", type=Path, default=RESULTS / "read_throughput.json")
    args = parser.parse_args()
    asyncio.run(
        main(
            args.runs,
            args.duration,
            args.connections,
            args.dispatches,
            args.usage_events,
            args.sample_ratio,
            args.only,
            args.output,
        )
    )
