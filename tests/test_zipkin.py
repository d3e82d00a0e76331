"""The local tracing backend as a user meets it: `mediai up` starts Zipkin (the server jar from
Maven Central, cached by `make zipkin`), prints its URL, `mediai status` shows it, the services'
spans reach it, its UI is served from the jar, and a webhook's trace leads to its room's."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy import zipkin
from shared.config import Settings
from tests.standin import OpenAIStandin
from tests.support import eventually, stack_settings
from tests.test_agent_e2e import Participant, new_room
from tests.test_stack import mediai, start_up, stop_up

pytestmark = pytest.mark.livekit


@pytest.fixture
def zipkin_settings(openai_standin: OpenAIStandin) -> Iterator[Settings]:
    # Fetched by `make zipkin` (`make test` runs it first), never by a test.
    assert zipkin.jar_path().is_file(), "the Zipkin server is not cached: run 'make zipkin'"
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-zipkin-"))
    yield stack_settings(
        data_dir,
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        zipkin=True,
        # Unset, so the link to one trace is derived from Zipkin's address as for `mediai up`.
        trace_url_template="",
        services=("token", "webhooks"),
    )
    shutil.rmtree(data_dir, ignore_errors=True)


async def zipkin_spans(zipkin: httpx.AsyncClient, trace_id: str) -> list[dict[str, Any]]:
    answer = await zipkin.get(f"/api/v2/trace/{trace_id}")
    return list(answer.json()) if answer.status_code == 200 else []


async def test_up_runs_zipkin_and_the_services_traces_show_there(
    zipkin_settings: Settings,
) -> None:
    process = await start_up(zipkin_settings)
    try:
        assert process.stdout is not None
        printed = [(await process.stdout.readline()).decode() for _ in range(6)]
        traces_line = next(line for line in printed if line.strip().startswith("traces"))
        assert traces_line.split()[1] == zipkin_settings.zipkin_url

        status = json.loads(mediai(zipkin_settings, "status", "--json").stdout)
        assert status["traces_url"] == zipkin_settings.zipkin_url
        template = status["trace_url_template"]
        assert template == f"{zipkin_settings.zipkin_url}traces/{{trace_id}}"
        (part,) = [p for p in status["parts"] if p["name"] == "zipkin"]
        assert part["state"] == "running"

        base = f"http://{zipkin_settings.host}:{zipkin_settings.zipkin_port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as zipkin,
            httpx.AsyncClient(
                base_url=status["gateway_url"],
                headers={"Authorization": f"Bearer {status['dev_api_key']}"},
                timeout=10,
            ) as api,
        ):
            # A request that names its trace: the token service's spans arrive in Zipkin.
            trace_id = os.urandom(16).hex()
            response = await api.post(
                "/v1/tokens",
                json={"room": "sala-zipkin", "identity": "paciente-1"},
                headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"},
            )
            assert response.status_code == 201, response.text

            async def token_trace() -> list[dict[str, Any]] | None:
                spans = await zipkin_spans(zipkin, trace_id)
                names = {s.get("name") for s in spans}
                wanted = {"post /v1/tokens", "publish mediai.token.issued.v1"}
                return spans if wanted <= names else None

            spans = await eventually(token_trace, timeout=30, step=0.5)
            assert {s["localEndpoint"]["serviceName"] for s in spans} == {"mediai-token"}

            # The UI is served from the jar, its scripts too (no CDN), at the trace's URL.
            page = await zipkin.get(template.replace("{trace_id}", trace_id))
            assert page.status_code == 200 and "<title>Zipkin</title>" in page.text
            script = page.text.split('src="', 1)[1].split('"', 1)[0]
            assert (await zipkin.get(script)).status_code == 200

            # Webhooks: Zipkin keeps no links, so the room's trace is a tag on each of them.
            room = new_room()
            patient = await Participant.join(api, room, "paciente-2")
            room_sid = await patient.room.sid

            async def room_hooks() -> list[dict[str, Any]] | None:
                answer = await zipkin.get(
                    "/api/v2/traces",
                    params={
                        "serviceName": "mediai-webhooks",
                        "annotationQuery": f"mediai.room.sid={room_sid}",
                        "limit": 20,
                    },
                )
                hooks = [s for t in answer.json() for s in t if "mediai.room.sid" in s["tags"]]
                return hooks if len(hooks) >= 2 else None  # room_started, participant_joined

            hooks = await eventually(room_hooks, timeout=30, step=0.5)
            await patient.leave()
        room_traces = {h["tags"]["mediai.room.trace_id"] for h in hooks}
        assert len(room_traces) == 1, hooks
        assert room_traces <= {h["traceId"] for h in hooks}  # the room_started webhook's own
    finally:
        await stop_up(process)
