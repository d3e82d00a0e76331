"""`mediai up` as a user runs it: start, ready, status, resume with data intact, stop clean."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from deploy.stack import StackState, child_environ
from deploy.static import WEB_DIST
from shared.config import Settings
from tests.standin import OpenAIStandin
from tests.support import eventually, stack_settings

STANDIN_MODELS = {"stt": "openai/whisper-1", "llm": "openai/gpt-4o-mini", "tts": "openai/tts-1"}
READY_TIMEOUT = 180  # ready includes a registered agent worker, and the machine may be busy


@pytest.fixture
def up_settings(openai_standin: OpenAIStandin) -> Iterator[Settings]:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-up-"))
    yield stack_settings(
        data_dir, openai_base_url=openai_standin.base_url, openai_api_key="standin-key"
    )
    shutil.rmtree(data_dir, ignore_errors=True)


def environ(settings: Settings) -> dict[str, str]:
    return {**os.environ, **child_environ(settings)}


def mediai(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        env=environ(settings),
        cwd=settings.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def start_up(settings: Settings) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy",
        "up",
        env=environ(settings),
        cwd=settings.data_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            line = (await process.stdout.readline()).decode()
            seen.append(line)
            assert line, f"mediai up exited before it was ready: {''.join(seen[-5:])}"
            if line.startswith("MediAI is ready"):
                return process


async def stop_up(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):  # the bound for a clean stop
        output, _ = await process.communicate()
    assert process.returncode == 0
    return output.decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_up_status_resume_and_stop_leave_nothing_behind(up_settings: Settings) -> None:
    process = await start_up(up_settings)
    try:
        status = mediai(up_settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert document["gateway_url"] == up_settings.gateway_url
        assert document["nats_url"] == up_settings.nats_url
        assert document["livekit"] == {
            "url": up_settings.livekit_url,
            "api_key": up_settings.livekit_api_key,
            "api_secret": up_settings.livekit_api_secret,
            "local": True,
        }
        assert {p["name"] for p in document["parts"]} >= {
            "nats",
            "postgres",
            "livekit",
            "token",
            "gateway",
        }
        assert all(p["state"] == "running" for p in document["parts"])
        pids = [p["pid"] for p in document["parts"]]

        created = mediai(up_settings, "tenants", "create", "Clínica Exemplo")
        assert created.returncode == 0, created.stderr
        clinic_key = created.stdout.strip().splitlines()[-1]
    finally:
        await stop_up(process)
    assert not [pid for pid in pids if alive(pid)], "a part outlived mediai up"
    assert mediai(up_settings, "status").returncode == 3

    # A second start on the same folder resumes: same dev key, the tenant is still there.
    process = await start_up(up_settings)
    try:
        assert (
            json.loads(mediai(up_settings, "status", "--json").stdout)["dev_api_key"]
            == document["dev_api_key"]
        )
        async with httpx.AsyncClient(
            base_url=up_settings.gateway_url, headers={"Authorization": f"Bearer {clinic_key}"}
        ) as client:
            response = await client.post("/v1/tokens", json={"room": "r1", "identity": "p1"})
            assert response.status_code == 201, response.text
            # Ready means ready: a dispatch sent the moment `mediai up` said so is taken.
            dispatched = await client.post("/v1/agents", json={"room": "r1", **STANDIN_MODELS})
            assert dispatched.status_code == 202, dispatched.text
            dispatch_id = dispatched.json()["id"]

            async def joined() -> str | None:
                state = (await client.get(f"/v1/agents/{dispatch_id}")).json()["state"]
                assert state != "failed", "the first dispatch after ready was not taken"
                return state if state == "joined" else None

            await eventually(joined, timeout=30)
            await serves_the_console(client)
    finally:
        output = await stop_up(process)
    assert "stopped." in output
    assert f"console      {up_settings.gateway_url}/#k={document['dev_api_key']}" in output


async def serves_the_console(client: httpx.AsyncClient) -> None:
    """The gateway of `mediai up` serves the console built by `make web` at /, and its own
    paths (a patient's /consulta/{room}) as the same page, which routes itself."""
    if not (WEB_DIST / "index.html").exists():
        if os.environ.get("CI"):
            pytest.fail("the console is not built (make web)")  # make test builds it first
        return
    for path in ("/", "/consulta/r1"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        assert '<div id="root">' in page.text and "/assets/" in page.text


async def test_a_busy_port_is_one_clear_line(up_settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", up_settings.nats_port))
        squatter.listen()
        result = await asyncio.to_thread(mediai, up_settings, "up")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mediai: nats: port {up_settings.nats_port} is already in use; free it or set "
        "MEDIAI_NATS_PORT to another port"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_status_without_a_stack_says_so(up_settings: Settings) -> None:
    result = mediai(up_settings, "status")
    assert result.returncode == 3
    assert "no stack is running" in result.stdout


def test_without_go_or_livekit_url_the_build_says_how_to_fix_it(tmp_path: Path) -> None:
    no_go = tmp_path / "bin"
    no_go.mkdir()
    (no_go / "python3").symlink_to(sys.executable)
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "livekit", "build"],
        env={"PATH": str(no_go), "MEDIAI_CACHE_DIR": str(tmp_path / "cache")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "mediai: LiveKit server: Go is not installed and LIVEKIT_URL is not set; install Go "
        "1.23+ (https://go.dev/dl) or set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
    ]


async def test_a_part_that_crashes_is_reported_and_the_rest_keeps_running(
    up_settings: Settings,
) -> None:
    settings = msgspec.structs.replace(up_settings, services=("token",))
    process = await start_up(settings)
    try:
        parts = {
            p["name"]: p for p in json.loads(mediai(settings, "status", "--json").stdout)["parts"]
        }
        os.kill(parts["token"]["pid"], signal.SIGKILL)
        assert process.stdout is not None
        async with asyncio.timeout(10):  # past the rest of the ready banner
            while not (line := (await process.stdout.readline()).decode().strip()).startswith(
                "mediai: token"
            ):
                assert line or process.returncode is None
        assert line == f"mediai: token exited with code -9; see {parts['token']['log']}"
        assert alive(parts["gateway"]["pid"]) and alive(parts["nats"]["pid"])
    finally:
        await stop_up(process)


async def test_readyz_shows_every_background_task_of_every_service(
    stack: StackState, settings: Settings
) -> None:
    """Each service's background work is supervised task by task, and /readyz says how each is
    doing (an outage names the dependency a task waits for: tests/faults)."""
    expected = {
        "rooms": {
            "outbox-relay",
            "bus-pruner",
            "read-model",
            "reconciler",
            "idempotency-key-pruner",
        },
        "dispatcher": {
            "outbox-relay",
            "bus-pruner",
            "worker-registry",
            "dispatcher-read-model",
            "dispatcher-launcher",
            "dispatcher-supervision",
            "deadline-sweeper",
            "lost-agent-sweeper",
            "usage-limits",
            "worker-capacity",
            "idempotency-key-pruner",
        },
        "pool": {"outbox-relay", "bus-pruner", "worker-pool"},
        "billing": {
            "outbox-relay",
            "bus-pruner",
            "usage-projection",
            "invoice-schedule",
            "idempotency-key-pruner",
        },
    }
    async with httpx.AsyncClient(timeout=5) as client:
        running = set(settings.services) or set(expected)
        for service, tasks in expected.items():
            if service not in running:
                continue
            answer = await client.get(
                f"http://{settings.host}:{settings.service_port(service)}/readyz"
            )
            body = answer.json()
            assert answer.status_code == 200, body
            assert set(body["tasks"]) == tasks
            assert all(task["state"] == "running" for task in body["tasks"].values()), body
            assert body["checks"] == {"nats": "ok", "postgres": "ok"}


def test_without_a_provider_for_the_default_models_ready_says_how_to_fix_it() -> None:
    from deploy.cli import provider_warning

    bare = Settings()
    warning = provider_warning(bare)
    assert warning is not None and "GOOGLE_API_KEY is not set" in warning
    assert "\n" not in warning
    assert provider_warning(msgspec.structs.replace(bare, google_api_key="k")) is None


def test_the_gateways_close_idle_connections_before_the_services_do(repo_root: Path) -> None:
    """A gateway must never send a request on a connection the service is closing that instant
    (a 502, not retried for a POST): its idle timeout to the services is the shorter one."""
    from deploy.cli import KEEP_ALIVE_SECONDS

    for caddyfile in ("deploy/Caddyfile", "deploy/production/Caddyfile"):
        idle = re.findall(r"^\s*keepalive (\d+)s$", (repo_root / caddyfile).read_text(), re.M)
        assert idle, f"{caddyfile} leaves the idle timeout at Caddy's default (2 min)"
        assert all(int(seconds) < KEEP_ALIVE_SECONDS for seconds in idle), (caddyfile, idle)


async def test_a_service_keeps_an_idle_connection_open(
    stack: StackState, settings: Settings
) -> None:
    """The same connection still answers after an idle spell longer than uvicorn's default
    keep-alive (5 s), which is what the gateway's pooled connections see between requests."""
    request = f"GET /healthz HTTP/1.1\r\nHost: {settings.host}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(settings.host, settings.service_port("token"))
    try:
        for _ in range(2):
            writer.write(request)
            status = await asyncio.wait_for(reader.readline(), timeout=5)
            assert status.startswith(b"HTTP/1.1 200"), status
            headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            length = int(re.search(rb"content-length: (\d+)", headers, re.I)[1])  # type: ignore[index]
            await asyncio.wait_for(reader.readexactly(length), timeout=5)
            await asyncio.sleep(6)  # the idle spell itself, the condition under test
    finally:
        writer.close()
