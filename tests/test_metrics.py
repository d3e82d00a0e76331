"""Metrics: every service exports them on its own port, labels never carry what a path names,
and the dashboard and alert rules only use metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from deploy.stack import StackState
from shared.config import Settings

OBSERVABILITY = Path(__file__).resolve().parent.parent / "deploy" / "observability"
METRIC = re.compile(r"\bmediai_[a-z_]+")


async def exported(settings: Settings, service: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(
            f"http://{settings.host}:{settings.service_port(service)}/metrics"
        )
    assert answer.status_code == 200
    return answer.text


def families(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# HELP ") else line.split("{")[0].split(" ")[0]
        names.add(re.sub(r"_(bucket|count|sum|created)$", "", name))
    return names


def used_in_dashboard_and_alerts() -> set[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in METRIC.findall(e)}


def test_every_alert_needs_a_person_and_says_what_to_do() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    for rule in (r for group in rules["groups"] for r in group["rules"]):
        assert rule["alert"].startswith("MediAI")
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


async def test_the_dashboard_and_alerts_use_only_exported_metrics(
    stack: StackState, settings: Settings, api: httpx.AsyncClient
) -> None:
    await api.get("/v1/agents")  # an HTTP request, so its series exist
    exported_families = families(await exported(settings, "dispatcher"))
    missing = used_in_dashboard_and_alerts() - exported_families
    assert not missing, f"used in deploy/observability but not exported: {sorted(missing)}"


async def test_request_metrics_name_the_route_never_the_path(
    stack: StackState, settings: Settings, api: httpx.AsyncClient
) -> None:
    canary = "consulta-canario-metricas"
    assert (await api.get(f"/v1/rooms/{canary}")).status_code == 404
    text = await exported(settings, "rooms")
    assert canary not in text
    [line] = [
        sample
        for sample in text.splitlines()
        if sample.startswith("mediai_http_requests_total{")
        and 'method="GET"' in sample  # other tests of the session (the fuzzer) send others
        and 'status_code="404"' in sample
        and 'path="/v1/rooms/{name}"' in sample
    ]
    assert float(line.rsplit(" ", 1)[1]) >= 1


async def test_consumers_export_their_lag_and_outcomes(
    stack: StackState, settings: Settings
) -> None:
    text = await exported(settings, "rooms")
    assert 'mediai_consumer_pending{consumer="rooms-read-model"}' in text
    assert 'mediai_task_up{task="read-model"} 1.0' in text
