"""The API's OpenAPI contract: the merged document the gateway serves, its viewer (local assets
only), the breaking-change check, and answers the fuzzer found untrue before."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from deploy import openapi
from deploy.stack import StackState
from tests.support import post_raw


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: op
        for item in document["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }


async def test_the_gateway_serves_the_merged_document(api: httpx.AsyncClient) -> None:
    served = await api.get("/openapi.json")
    assert served.status_code == 200
    document = served.json()
    assert document == json.loads(openapi.DOCUMENT.read_text())
    operations = _operations(document)
    assert {"createToken", "createRoom", "dispatchAgent", "getUsage", "bookAppointment"} <= set(
        operations
    )
    assert "status_code" not in served.text  # Litestar's own error schema is gone
    for name, operation in operations.items():
        responses = operation["responses"]
        assert "503" in responses and "Retry-After" in responses["503"]["headers"], name
        if name != "receiveLiveKitWebhook":
            assert "WWW-Authenticate" in responses["401"]["headers"], name
        for status, response in responses.items():
            if int(status) >= 400:
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, name
                codes = re.findall(r"^- `([a-z_]+)`", response["description"], re.MULTILINE)
                [example] = content["examples"].values()
                assert example["value"]["error"]["code"] in codes, (name, status)


def test_request_bodies_forbid_unknown_fields_as_documented() -> None:
    schemas = json.loads(openapi.DOCUMENT.read_text())["components"]["schemas"]
    for name in ("CreateTokenRequest", "CreateRoomRequest", "DispatchAgentRequest", "WindowBody"):
        assert schemas[name]["additionalProperties"] is False, name
    # Constraints of list items (Litestar's generation leaves them out; StrictStructs adds them).
    identities = schemas["SendDataRequest"]["properties"]["destinationIdentities"]
    assert identities["items"]["pattern"].startswith("^[A-Za-z0-9]")
    assert schemas["CreateRoomRequest"]["properties"]["emptyTimeout"]["minimum"] == 0


def test_creates_link_to_what_acts_on_what_they_made() -> None:
    paths = json.loads(openapi.DOCUMENT.read_text())["paths"]
    room = paths["/v1/rooms"]["post"]["responses"]
    for status in ("200", "201"):
        assert room[status]["links"]["GetRoom"] == {
            "operationId": "getRoom",
            "parameters": {"name": "$response.body#/name"},
        }
    dispatched = paths["/v1/agents"]["post"]["responses"]["202"]["links"]
    assert {"GetAgent", "EndAgent", "CommandAgent"} <= set(dispatched)
    slots = paths["/v1/doctors/{doctor_id}/slots"]["get"]["responses"]["200"]["links"]
    assert slots["BookAppointment"]["requestBody"]["startsAt"] == "$response.body#/slots/0/startsAt"
    operations = set(_operations({"paths": paths}))
    for item in paths.values():
        for operation in item.values():
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    assert link["operationId"] in operations, link


def _examples(node: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """(schema, example) of every example in the document: a schema's ``examples`` and a
    media type's named ``examples``."""
    if isinstance(node, list):
        for item in node:
            yield from _examples(item)
        return
    if not isinstance(node, dict):
        return
    listed = node.get("examples")
    if isinstance(listed, list) and {"type", "$ref", "oneOf"} & set(node):
        yield {k: v for k, v in node.items() if k != "examples"}, listed
    elif isinstance(listed, dict) and "schema" in node:
        yield node["schema"], [example["value"] for example in listed.values()]
    for value in node.values():
        yield from _examples(value)


def test_every_example_is_valid() -> None:
    document = json.loads(openapi.DOCUMENT.read_text())
    checked = 0
    for schema, examples in _examples(document):
        # The document's components beside the schema, so its "#/components/..." refs resolve.
        validator = jsonschema_rs.validator_for({"components": document["components"], **schema})
        for example in examples:
            assert validator.is_valid(example), (schema, example)
            checked += 1
    assert checked > 100  # the error answers' examples, and the fields' own


def test_path_parameters_state_their_rules() -> None:
    document = json.loads(openapi.DOCUMENT.read_text())
    [name, identity, track] = document["paths"][
        "/v1/rooms/{name}/participants/{identity}/tracks/{track_sid}/mute"
    ]["post"]["parameters"]
    assert name["schema"]["pattern"].startswith("^[A-Za-z0-9]")
    assert "@" in identity["schema"]["pattern"]
    assert track["schema"]["maxLength"] == 64


async def test_the_viewer_loads_only_local_assets(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs/")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and "http" not in page.text.replace("http-equiv", "")
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        fetched = await api.get(asset)
        assert fetched.status_code == 200, asset
        assert not re.search(r"url\(\s*['\"]?https?:", fetched.text), asset
    viewer = await api.get("/docs/viewer.js")
    assert '"/openapi.json"' in viewer.text and "validatorUrl: null" in viewer.text


def test_merging_keeps_one_copy_of_a_shared_schema_and_renames_clashes() -> None:
    def document(path: str, schemas: dict[str, Any]) -> dict[str, Any]:
        ref = {"$ref": "#/components/schemas/Thing"}
        body = {"content": {"application/json": {"schema": ref}}}
        return {
            "openapi": "3.1.0",
            "paths": {path: {"get": {"responses": {"200": body}}}},
            "components": {"schemas": schemas},
        }

    same = {"Shared": {"type": "string"}}
    merged = openapi.merge(
        {
            "rooms": document("/v1/rooms", {"Thing": {"type": "object"}, **same}),
            "billing": document("/v1/usage", {"Thing": {"type": "array"}, **same}),
        }
    )
    assert set(merged["components"]["schemas"]) == {"RoomsThing", "BillingThing", "Shared"}
    usage = merged["paths"]["/v1/usage"]["get"]["responses"]["200"]["content"]
    assert usage["application/json"]["schema"] == {"$ref": "#/components/schemas/BillingThing"}
    with pytest.raises(ValueError, match="two services"):
        openapi.merge({"a": document("/v1/x", {}), "b": document("/v1/x", {})})


@pytest.mark.skipif(shutil.which("go") is None, reason="oasdiff is built with Go")
def test_a_breaking_change_fails_unless_declared(tmp_path: Path) -> None:
    before = json.loads(openapi.DOCUMENT.read_text())
    after = json.loads(openapi.DOCUMENT.read_text())
    del after["paths"]["/v1/usage/limits"]
    (tmp_path / "after.json").write_text(json.dumps(after))
    (tmp_path / "before.json").write_text(json.dumps(before))
    declared = tmp_path / "declared.txt"
    declared.write_text("# nothing declared\n")
    found = openapi.undeclared_breaking(
        str(tmp_path / "before.json"), str(tmp_path / "after.json"), declared
    )
    assert "GET /v1/usage/limits" in found and "api-path-removed" in found
    declared.write_text(
        "GET /v1/usage/limits api path removed without deprecation -- reason: a test\n"
    )
    assert (
        openapi.undeclared_breaking(
            str(tmp_path / "before.json"), str(tmp_path / "after.json"), declared
        )
        == ""
    )
    # Adding an operation is not breaking.
    assert openapi.undeclared_breaking(str(tmp_path / "after.json"), str(openapi.DOCUMENT)) == ""


# --- answers the fuzzer found untrue ---------------------------------------------------------


async def test_bodies_are_decoded_as_strictly_as_documented(api: httpx.AsyncClient) -> None:
    lenient = await api.post("/v1/tokens", json={"room": "c-1", "identity": "p-1", "canPublish": 0})
    assert lenient.status_code == 400
    assert lenient.json()["error"]["code"] == "invalid_request"
    assert lenient.json()["error"]["details"] == [
        {"field": "canPublish", "problem": "Expected `bool`, got `int`"}
    ]
    # An integral number is an integer, as in JSON Schema.
    whole = await api.get("/v1/agents", params={"limit": "5"})
    assert whole.status_code == 200


async def test_a_date_time_query_parameter_is_rfc_3339(api: httpx.AsyncClient) -> None:
    seconds = await api.get("/v1/appointments", params={"until": "0.5"})
    assert seconds.status_code == 400
    assert seconds.json()["error"]["details"][0]["field"] == "until"
    iso = await api.get("/v1/appointments", params={"until": "2026-03-02T09:00:00-03:00"})
    assert iso.status_code == 200


async def test_an_empty_usage_bound_is_refused(api: httpx.AsyncClient) -> None:
    answer = await api.get("/v1/usage", params={"to": ""})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_period")


def test_an_optional_body_is_documented_as_optional() -> None:
    """Cancelling takes no body (its reason is optional): the document said one was required
    (Litestar documents every body so), and the fuzzer's request without one was accepted."""
    paths = json.loads(openapi.DOCUMENT.read_text())["paths"]
    assert paths["/v1/appointments/{appointment_id}/cancel"]["post"]["requestBody"] == {
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/CancelAppointmentRequest"},
                        {"type": "null"},
                    ]
                }
            }
        },
        "required": False,
    }
    assert paths["/v1/appointments"]["post"]["requestBody"]["required"] is True


async def test_method_answers_name_every_allowed_method(api: httpx.AsyncClient) -> None:
    options = await api.options("/v1/rooms/c-1")
    assert options.status_code == 204
    assert set(options.headers["allow"].split(", ")) == {"DELETE", "GET", "OPTIONS"}
    wrong = await api.put("/v1/rooms/c-1")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].split(", ")) == {"DELETE", "GET", "OPTIONS"}
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_bodies_over_the_gateways_limit_are_json(stack: StackState) -> None:
    """Refused by their Content-Length (Caddy's own limit stopped the read midway and answered
    whatever the upstream had said by then: an empty 200, a 502, the service's own 413)."""
    for path, size in (("/v1/tokens", 10_000_001), ("/v1/webhooks/livekit", 1_000_001)):
        status, body = await asyncio.to_thread(post_raw, stack.gateway_url, path, size)
        assert status == 413, (path, body)
        assert json.loads(body)["error"]["code"] == "request_too_large"
