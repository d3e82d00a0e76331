"""The API fuzzer: schemathesis, every check, over every operation of the gateway's merged
OpenAPI document, with the development tenant's key, on the session's real stack.

Zero failures means: no 5xx but the documented 503s of what the local stack does not run (see
tests/fuzz/schemathesis.toml), every answer's status, headers and body as documented, invalid
requests refused and valid ones accepted but for the rules in tests/fuzz/allowlist.toml. The
webhook endpoint gets bodies signed with the stack's LiveKit key pair (tests/fuzz/hooks.py).
A doctor with free slots, an appointment and a room with a real participant are made first
(tests/fuzz/seed.py), so the operations on them get past their 404.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from deploy.stack import StackState
from shared.config import Settings
from tests.fuzz.seed import ROOM, dictionaries, seeded

FUZZ = Path(__file__).resolve().parent / "fuzz"
# Fixed, so a failure in CI is the same failure on a developer's machine; MEDIAI_FUZZ_SEED
# explores other inputs.
SEED = os.environ.get("MEDIAI_FUZZ_SEED", "20261201")
# A limit, far above the run's few minutes (docs/api.md): a loaded machine is slow, a hung run
# is not. pytest's own limit adds the session stack's start, when this test is the first.
TIMEOUT = 900

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(TIMEOUT + 300)]

# Operations the fuzzer must get past their 404 (or the signature check) on: a success on each
# shows the seeded data and the signing hook work, so the checks reached the code behind them.
MUST_SUCCEED = {
    "receiveLiveKitWebhook",
    "getParticipant",
    "updateParticipant",
    "muteTrack",
    "getRoom",
    "getDoctor",
    "listFreeSlots",
    "getAppointment",
    "cancelAppointment",
    "getAgent",
}


async def _end_dispatches(api: httpx.AsyncClient) -> None:
    """End every agent the fuzzer dispatched: they hold the session stack's worker slots, and
    later tests' dispatches would be refused at capacity (503 agents_at_capacity)."""
    for state in ("requested", "dispatched", "joined"):
        listed = await api.get("/v1/agents", params={"state": state, "limit": 500})
        for dispatch in listed.json():
            await api.delete(f"/v1/agents/{dispatch['id']}")


async def test_the_fuzzer_finds_nothing(
    stack: StackState, api: httpx.AsyncClient, tenant_key: str, settings: Settings, tmp_path: Path
) -> None:
    async with seeded(api) as values:
        try:
            report = await _fuzz(stack, tenant_key, settings, tmp_path, values)
        finally:
            await _end_dispatches(api)
    answers = _records(tmp_path / "answers.jsonl", "operation", "status")
    tolerated = _records(tmp_path / "tolerated.jsonl", "operation", "failure", "code")
    # The run's summary, what each operation answered and what the allowlist took (shown with
    # -s, or on failure).
    print(report)
    for (operation, status), count in sorted(answers.items()):
        print(f"  {count:4} {operation} {status}")
    print("tolerated by tests/fuzz/allowlist.toml:")
    for (operation, failure, code), count in sorted(tolerated.items()):
        print(f"  {count:4} {operation} {failure} {code}")
    succeeded = {operation for operation, status in answers if 200 <= int(status) < 300}
    assert not MUST_SUCCEED - succeeded, sorted(MUST_SUCCEED - succeeded)


def _records(path: Path, *keys: str) -> collections.Counter[tuple[str, ...]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return collections.Counter(tuple(str(line[key]) for key in keys) for line in lines)


async def _fuzz(
    stack: StackState, tenant_key: str, settings: Settings, tmp_path: Path, values: dict[str, str]
) -> str:
    """Run schemathesis (its output); the hooks write answers.jsonl and tolerated.jsonl."""
    config = tmp_path / "schemathesis.toml"
    config.write_text((FUZZ / "schemathesis.toml").read_text() + "\n" + dictionaries(values))
    for record in ("answers.jsonl", "tolerated.jsonl"):
        (tmp_path / record).touch()
    schemathesis = Path(sys.executable).with_name("schemathesis")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
        "MEDIAI_FUZZ_API_KEY": tenant_key,
        "MEDIAI_FUZZ_LIVEKIT_KEY": settings.livekit_api_key,
        "MEDIAI_FUZZ_LIVEKIT_SECRET": settings.livekit_api_secret,
        "MEDIAI_FUZZ_KEEP_ROOM": ROOM,
        "MEDIAI_FUZZ_ANSWERS": str(tmp_path / "answers.jsonl"),
        "MEDIAI_FUZZ_TOLERATED": str(tmp_path / "tolerated.jsonl"),
        "PYTHONPATH": str(FUZZ.parent.parent),
    }
    log = tmp_path / "schemathesis.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(schemathesis),
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{stack.gateway_url}/openapi.json",
            "--checks",
            "all",
            "--seed",
            SEED,
            "--workers",
            "1",
            # The timeline's live stream answers 200 and keeps sending for up to an hour (its
            # documented contract): a fuzzer's request would never end. Its validation (400,
            # 401, 404 before the stream starts) is the same code as getSessionTimeline's,
            # which is fuzzed; tests/test_sessions.py reads the stream itself.
            "--exclude-operation-id",
            "streamSessionTimeline",
            "--report-dir",
            str(tmp_path),
            cwd=FUZZ.parent.parent,
            env=env,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await asyncio.wait_for(process.wait(), timeout=TIMEOUT)
        except TimeoutError:
            process.kill()  # by its pid: ours, started above
            await process.wait()
    report = log.read_text(errors="replace")
    assert process.returncode == 0, report[-6000:]
    return report
