"""Schemathesis hooks of the API fuzzer (tests/test_api_fuzz.py loads them by SCHEMATHESIS_HOOKS).

- LiveKit's webhook endpoint is fuzzed as LiveKit calls it: each generated body is signed with
  the stack's LiveKit key pair (a JWT whose sha256 claim is the body's hash), so the fuzzer
  reaches the code behind the signature check, as tests/test_webhooks.py does by hand.
- The seeded room (``MEDIAI_FUZZ_KEEP_ROOM``) is never deleted, nor its participant removed:
  the operations that need them to succeed (tests/test_api_fuzz.py, ``MUST_SUCCEED``) come in
  no fixed order after those that would end them.
- Each request's ``Idempotency-Key`` is made unique (a counter before the generated key, within
  the key's rules): a key sent twice answers its first answer again (``Idempotent-Replayed``),
  or 422 with another body, a rule across requests that tests/test_idempotency.py covers; here
  it would only make the fuzzer's own requests collide.
- A failure is kept unless tests/fuzz/allowlist.toml lists its operation, its kind and its
  error code (and, for a code that several rules share, a part of the message), with a reason:
  valid requests rejected by rules across fields, or of the deployment or the data, that a
  schema cannot express, and the documented answers of what the local stack does not run.
- What the run did is written down for the test, one JSON line each: every answer's operation
  and status (to the operation's own method) to the file ``MEDIAI_FUZZ_ANSWERS`` names (did the fuzzer get past the 404s and
  the signature?), and every failure tolerated to ``MEDIAI_FUZZ_TOLERATED`` (what the allowlist
  took).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import schemathesis
from livekit.api import AccessToken

ALLOWLIST = Path(__file__).with_name("allowlist.toml")
WEBHOOK_OPERATION = "receiveLiveKitWebhook"


def allowlist() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(operationId, failure class) -> the (error code, part of the message) of the answers
    that failure is tolerated with. A valid request rejected is ``RejectedPositiveData``."""
    listed = tomllib.loads(ALLOWLIST.read_text())
    allowed: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for entry in [*listed["failure"], *listed["rejected"]]:
        assert entry["reason"].strip(), f"{entry['operation']} {entry['code']}: give a reason"
        failure = entry.get("failure", "RejectedPositiveData")
        rule = (entry["code"], entry.get("message", ""))
        allowed.setdefault((entry["operation"], failure), []).append(rule)
    return allowed


_ALLOWED = allowlist()


_calls = itertools.count()


def _body_bytes(case: Any) -> bytes:
    body = case.body
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if type(body).__name__ == "NotSet":
        return b""
    return json.dumps(body, separators=(",", ":")).encode()


def _operation(case: Any) -> str:
    return str(case.operation.definition.raw.get("operationId", ""))


# The seeded room and participant (tests/fuzz/seed.py) must outlive the run: the operations that
# would end them, drawn with the seeded name half the time, act on a room that is not there.
ENDS_THE_ROOM = {"deleteRoom", "removeParticipant"}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    kept = os.environ.get("MEDIAI_FUZZ_KEEP_ROOM")
    if _operation(case) in ENDS_THE_ROOM and (case.path_parameters or {}).get("name") == kept:
        case.path_parameters["name"] = f"{kept}-gone"
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[!-~]{1,255}", key):
        case.headers["Idempotency-Key"] = f"{next(_calls)}-{key}"[:255]
    if _operation(case) != WEBHOOK_OPERATION:
        return
    body = _body_bytes(case)
    token = AccessToken(
        os.environ["MEDIAI_FUZZ_LIVEKIT_KEY"], os.environ["MEDIAI_FUZZ_LIVEKIT_SECRET"]
    )
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    case.headers = {**(case.headers or {}), "Authorization": token.with_sha256(digest).to_jwt()}
    kwargs["data"] = body


def _note(variable: str, line: dict[str, Any]) -> None:
    if record := os.environ.get(variable):
        with open(record, "a") as file:
            file.write(json.dumps(line) + "\n")


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    # Only the operation's own method: the checks also send OPTIONS and other methods (204, 405).
    if str(response.request.method).upper() == str(case.operation.method).upper():
        line = {"operation": _operation(case), "status": response.status_code}
        _note("MEDIAI_FUZZ_ANSWERS", line)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but those allowlisted (with their code, when they name one)."""
    rules = _ALLOWED.get((_operation(case), type(failure).__name__), [])
    if not rules:
        return True
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "", ""
    tolerated = any(code == allowed and part in message for allowed, part in rules)
    if tolerated:
        line = {"operation": _operation(case), "failure": type(failure).__name__, "code": code}
        _note("MEDIAI_FUZZ_TOLERATED", line)
    return not tolerated
