"""The avatar a dispatch asks for: validated by the dispatcher (unknown or unconfigured → 400),
carried in the job metadata, and preferred by the agent over the deployment's default."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from services.agent import avatar
from services.agent.metadata import parse_metadata
from services.dispatcher.catalog import build_catalog
from services.dispatcher.core import (
    DispatchAgentRequest,
    DispatchRejectedError,
    decide_request,
    evolve,
)
from shared.config import Settings
from shared.events import CODEC, envelope
from shared.events.agents import AgentDispatchRequested
from tests.support import stack_settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tabcdefghij"
BEY = {"bey_api_key": "bk", "bey_avatar_id": "face-1"}
TAVUS = {"tavus_api_key": "tk", "tavus_replica_id": "r-1"}


def deployment(**overrides: object) -> Settings:
    return msgspec.structs.replace(Settings(), **overrides)


def decide(settings: Settings, **fields: object) -> AgentDispatchRequested:
    request = msgspec.convert(
        {"room": "consult-1", "role": "receptionist", **fields}, DispatchAgentRequest
    )
    return decide_request(
        request, catalog=build_catalog(settings), dispatch_id="d1", now=T0, deadline_seconds=10
    )


def refusal(settings: Settings, **fields: object) -> DispatchRejectedError:
    with pytest.raises(DispatchRejectedError) as caught:
        decide(settings, **fields)
    return caught.value


def test_no_avatar_asked_leaves_the_deployment_default_to_the_agent() -> None:
    # Not validated here: the deployment's default keeps its voice-only fallback at the agent.
    assert decide(deployment(agent_avatar="bey")).avatar == ""
    assert decide(deployment()).avatar == ""


def test_a_configured_avatar_or_none_is_recorded() -> None:
    assert decide(deployment(**BEY), avatar="bey").avatar == "bey"
    assert decide(deployment(**TAVUS), avatar="tavus").avatar == "tavus"
    assert decide(deployment(agent_avatar="bey"), avatar="none").avatar == "none"


@pytest.mark.parametrize(
    ("asked", "configured", "missing"),
    [
        ("bey", {}, ["BEY_API_KEY", "BEY_AVATAR_ID"]),
        ("bey", {"bey_api_key": "bk"}, ["BEY_AVATAR_ID"]),
        ("tavus", {}, ["TAVUS_API_KEY", "TAVUS_REPLICA_ID"]),
        ("tavus", {"tavus_replica_id": "r-1"}, ["TAVUS_API_KEY"]),
        ("tavus", BEY, ["TAVUS_API_KEY", "TAVUS_REPLICA_ID"]),  # another provider's keys
    ],
)
def test_an_avatar_without_its_settings_is_refused_naming_them(
    asked: str, configured: dict[str, str], missing: list[str]
) -> None:
    error = refusal(deployment(**configured), avatar=asked)
    assert (error.status, error.code) == (400, "avatar_unavailable")
    assert str(error) == (
        f"avatar {asked!r} is not available in this deployment: {', '.join(missing)} not set"
    )
    assert error.details == [{"field": "avatar", "value": asked, "missing": missing}]


@pytest.mark.parametrize("asked", ["heygen", "", "BEY"])
def test_an_unknown_avatar_is_refused_listing_the_valid_ones(asked: str) -> None:
    error = refusal(deployment(**BEY, **TAVUS), avatar=asked)
    assert (error.status, error.code) == (400, "unknown_avatar")
    assert error.details == [{"field": "avatar", "value": asked, "valid": ["none", "bey", "tavus"]}]
    assert "one of none, bey, tavus" in str(error)


def test_models_are_checked_before_the_avatar() -> None:
    assert refusal(deployment(), llm="gpt-99", avatar="tavus").code == "unknown_model"


def test_the_dispatch_avatar_travels_in_the_metadata_and_wins_over_the_default(
    tmp_path: Path,
) -> None:
    settings = stack_settings(tmp_path, agent_avatar="bey", **BEY, **TAVUS)
    requested = decide(settings, avatar="tavus")
    # As the dispatcher puts it on the LiveKit dispatch: the whole CloudEvents document.
    document = CODEC.encode(
        envelope(
            requested, source="mediai/dispatcher", tenant=TENANT, subject=requested.dispatch_id
        )
    )
    meta = parse_metadata(document.decode())
    assert meta.avatar == "tavus"
    assert avatar.choose(settings, speaks=True, asked=meta.avatar) == avatar.Choice("tavus")
    # "none" silences the deployment's default; a role that does not speak shows no face.
    assert avatar.choose(settings, speaks=True, asked="none") is None
    assert avatar.choose(settings, speaks=False, asked="tavus") is None
    # Nothing asked: the deployment's default, as before the field existed.
    assert avatar.choose(settings, speaks=True, asked="") == avatar.Choice("bey")
    # The read model is unchanged by the new field.
    assert evolve(None, envelope(requested, source="s", tenant=TENANT, subject="d1")) is not None


def test_metadata_written_before_the_field_existed_means_the_deployment_default(
    tmp_path: Path,
) -> None:
    requested = decide(deployment())
    event = envelope(requested, source="mediai/dispatcher", tenant=TENANT, subject="d1")
    old = msgspec.json.decode(CODEC.encode(event))
    del old["data"]["avatar"]
    meta = parse_metadata(msgspec.json.encode(old))
    assert meta.avatar == ""
    settings = stack_settings(tmp_path, agent_avatar="tavus", tavus_api_key=None)
    missing = avatar.choose(settings, speaks=True, asked=meta.avatar)
    assert missing is not None
    assert (missing.provider, missing.reason) == ("tavus", "missing_credentials")


async def test_the_gateway_refuses_an_unconfigured_avatar(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    if settings.tavus_api_key or settings.tavus_replica_id:
        pytest.skip("this deployment has Tavus settings")
    response = await api.post(
        "/v1/agents", json={"room": "r1", "role": "receptionist", "avatar": "tavus"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "avatar_unavailable"
    assert "TAVUS_API_KEY" in error["message"]
    assert error["details"] == [
        {"field": "avatar", "value": "tavus", "missing": ["TAVUS_API_KEY", "TAVUS_REPLICA_ID"]}
    ]
    response = await api.post("/v1/agents", json={"room": "r1", "avatar": "heygen"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_avatar"
    assert response.json()["error"]["details"][0]["valid"] == ["none", "bey", "tavus"]
