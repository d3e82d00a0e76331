"""The production deployment files agree with the code. No Docker engine or Kubernetes cluster
runs them here, so a service added to the code and forgotten there would only fail on a
clinic's server: each HTTP service is deployed by compose and by the Helm chart, as its own NATS
user whose password every NATS node is given; every variable compose reads is in .env.example;
the image's health check knows every service's port."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from services import http_services
from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "deploy" / "production"
CHART = ROOT / "deploy" / "helm" / "mediai"
# The pool starts agent workers on one host for `mediai up`; in production the orchestrator does
# (compose's `agent` service, the chart's agent Deployment), so it is not deployed there.
LOCAL_ONLY = {"pool"}


def compose() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((PRODUCTION / "docker-compose.yml").read_text())
    return found


def env_example() -> set[str]:
    text = (PRODUCTION / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def deployed() -> list[str]:
    return [s for s in http_services() if s not in LOCAL_ONLY]


def test_compose_runs_every_service_as_its_own_nats_user() -> None:
    services = compose()["services"]
    for name in deployed():
        assert name in services, f"deploy/production/docker-compose.yml has no `{name}` service"
        service = services[name]
        assert service["command"] == ["mediai", "serve", name]
        assert service["environment"]["NATS_USER"] == name
        assert (
            service["environment"]["NATS_PASSWORD"] == f"${{MEDIAI_NATS_{name.upper()}_PASSWORD}}"
        )


def test_every_nats_password_the_servers_read_is_given_to_them_and_documented() -> None:
    users = (PRODUCTION / "nats" / "users.conf").read_text()
    read = set(re.findall(r"\$(MEDIAI_NATS_[A-Z]+_PASSWORD)", users))
    assert {f"MEDIAI_NATS_{name.upper()}_PASSWORD" for name in deployed()} <= read
    services = compose()["services"]
    for node in ("nats-1", "nats-2", "nats-3"):
        missing = read - set(services[node]["environment"])
        assert not missing, f"{node} is not given {sorted(missing)} (users.conf reads them)"
    assert read <= env_example()


def test_every_variable_compose_reads_is_in_the_env_example() -> None:
    text = (PRODUCTION / "docker-compose.yml").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    missing = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", code)) - env_example()
    assert not missing, f"add to deploy/production/.env.example: {sorted(missing)}"


def test_the_chart_deploys_every_service() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    templates = {p.stem for p in (CHART / "templates").glob("*.yaml")}
    for name in deployed():
        # Most are alike (services.yaml); the key service and the recorder have their own.
        assert name in values["services"] or name in templates, f"the chart does not run {name}"
        if name in values["services"]:
            assert values["services"][name]["port"] == Settings().service_port(name)


def test_the_images_health_check_knows_every_services_port() -> None:
    text = (PRODUCTION / "healthcheck.py").read_text()
    ports = dict(re.findall(r'^\s+"([a-z]+)": (\d+),$', text, re.MULTILINE))
    assert {name: int(port) for name, port in ports.items()} == {
        name: Settings().service_port(name) for name in http_services()
    }
