"""The Helm chart (deploy/helm): it renders, every object is valid against the Kubernetes
schemas (offline, PyPI's kubernetes-validate), and it keeps the promises docs/deployment.md
makes. The official NATS and LiveKit charts are not rendered: their repositories cannot be
reached here, so the umbrella chart is checked for what it names."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy import gotools

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "mediai"
STACK_CHART = ROOT / "deploy" / "helm" / "mediai-stack"
KUBERNETES = "1.31"  # the oldest version the chart's kubeVersion allows that clusters still run
Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def helm() -> str:
    """The pinned helm, built once from the Go module proxy (`make helm` does it first)."""
    return str(gotools.build(gotools.HELM))


def render(helm: str, *values: str) -> Objects:
    command = [helm, "template", "clinic", str(CHART), "--namespace", "mediai"]
    command += ["--kube-version", KUBERNETES]  # a source build defaults to 1.20
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: Objects, kind: str) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] == kind)


def named(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return spec


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("agent.autoscaling.enabled=false", "gateway.enabled=false", "networkPolicy.enabled=false"),
        ("migrations.enabled=false", "image.tag=1.4.2"),
        ("recorder.enabled=true", "recorder.storageClassName=fast-ssd"),
    ],
    ids=["defaults", "no-hpa-no-gateway-no-policies", "no-migrations", "recorder"],
)
def test_every_object_is_valid_kubernetes(helm: str, values: tuple[str, ...]) -> None:
    objects = render(helm, *values)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_services_are_ready_on_readyz_and_alive_on_healthz(helm: str) -> None:
    """A service waiting out a database outage is alive (not restarted in a loop) and not
    ready (out of its Service)."""
    objects = render(helm)
    for name in ("token", "rooms", "webhooks", "dispatcher", "billing", "scheduling", "keys"):
        [container] = containers(named(objects, "Deployment", f"clinic-{name}"))
        assert container["args"] == ["mediai", "serve", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        named(objects, "PodDisruptionBudget", f"clinic-{name}")


def test_agent_workers_drain_within_their_grace_and_scale_on_their_load(helm: str) -> None:
    objects = render(helm, "agent.drainTimeoutSeconds=1800")
    agent = named(objects, "Deployment", "clinic-agent")
    [container] = containers(agent)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MEDIAI_AGENT_DRAIN_TIMEOUT"] == "1800s"
    assert agent["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 1800
    assert "replicas" not in agent["spec"], "the HPA owns the replica count"
    hpa = named(objects, "HorizontalPodAutoscaler", "clinic-agent")
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "lk_agents_worker_load"
    assert named(objects, "PodDisruptionBudget", "clinic-agent")["spec"]["maxUnavailable"] == 1
    # The dispatcher never runs a pool of its own beside the agent Deployment.
    settings = named(objects, "ConfigMap", "clinic-settings")["data"]
    assert (settings["MEDIAI_AGENT_POOL_MIN"], settings["MEDIAI_AGENT_POOL_MAX"]) == ("0", "0")


def test_migrations_run_to_completion_before_install_and_upgrade(helm: str) -> None:
    job = named(render(helm), "Job", "clinic-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [container] = containers({"spec": {"template": job["spec"]["template"]}})
    assert container["args"] == ["mediai", "migrate"]


def test_secrets_go_only_where_they_are_needed(helm: str) -> None:
    """The key-encryption key only to the key service; the AI providers' keys only to the
    agent workers; no secret value anywhere in the chart's output."""
    objects = render(helm)
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        has_kek = any(v.get("secret", {}).get("secretName") == "mediai-kek" for v in volumes)
        assert has_kek == (name == "clinic-keys"), name
        refs = [
            e["secretRef"]["name"]
            for c in containers(deployment)
            for e in c.get("envFrom", [])
            if "secretRef" in e
        ]
        assert ("mediai-ai-providers" in refs) == (name == "clinic-agent"), name
    assert not list(of_kind(objects, "Secret"))


def test_the_gateway_runs_the_projects_caddyfile(helm: str) -> None:
    objects = render(helm)
    caddyfile = named(objects, "ConfigMap", "clinic-gateway")["data"]["Caddyfile"]
    assert caddyfile.strip() == (ROOT / "deploy" / "Caddyfile").read_text().strip()
    [caddy] = containers(named(objects, "Deployment", "clinic-gateway"))
    upstreams = {e["name"]: e["value"] for e in caddy["env"] if e["name"].endswith("_UPSTREAM")}
    assert upstreams["MEDIAI_ROOMS_UPSTREAM"] == "clinic-rooms:8102"
    assert upstreams["MEDIAI_SESSIONS_UPSTREAM"] == "clinic-sessions:8110"
    # The gateway image of the same release serves the console and the API's documents.
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert caddy["image"] == f"registry.example.com/mediai-gateway:{version}"
    assert {"name": "MEDIAI_STATIC_DIR", "value": "/srv/mediai"} in caddy["env"]


def test_the_stack_chart_takes_nats_and_livekit_from_their_official_charts() -> None:
    chart = yaml.safe_load((STACK_CHART / "Chart.yaml").read_text())
    repositories = {d["name"]: d["repository"] for d in chart["dependencies"]}
    assert repositories == {
        "mediai": "file://../mediai",
        "nats": "https://nats-io.github.io/k8s/helm/charts/",
        "livekit-server": "https://helm.livekit.io",
    }
    values = yaml.safe_load((STACK_CHART / "values.yaml").read_text())
    assert values["nats"]["config"]["cluster"]["replicas"] == 3
    assert values["nats"]["config"]["jetstream"]["merge"]["sync_interval"] == "always"
    assert values["mediai"]["settings"]["MEDIAI_NATS_REPLICAS"] == "3"
    redis = values["livekit-server"]["livekit"]["redis"]
    assert len(redis["sentinel_addresses"]) >= 3, "Redis without a single point of failure"
    assert values["livekit-server"]["livekit"]["turn"]["tls_port"] == 443


def test_each_component_logs_in_to_nats_as_itself(helm: str) -> None:
    """One NATS user per component (docs/deployment.md, "Who may do what on the bus"): each pod
    holds its own password only; the streams are applied by the operator's user alone."""
    objects = render(helm)
    users = {}
    for kind in ("Deployment", "Job"):
        for obj in of_kind(objects, kind):
            [container] = containers(obj)
            env = {e["name"]: e for e in container.get("env", [])}
            if "NATS_USER" not in env:
                continue
            user = env["NATS_USER"]["value"]
            secret = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "mediai-nats-users", "key": user}
            users[obj["metadata"]["name"]] = user
    services = (
        "token",
        "rooms",
        "webhooks",
        "dispatcher",
        "billing",
        "scheduling",
        "sessions",
        "keys",
    )
    assert users == {
        **{f"clinic-{name}": name for name in services},
        "clinic-agent": "agent",
        "clinic-streams": "operator",
    }
    streams = named(objects, "Job", "clinic-streams")
    assert containers({"spec": {"template": streams["spec"]["template"]}})[0]["args"] == [
        "mediai",
        "streams",
        "apply",
    ]
    assert streams["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_the_recorder_is_one_pod_with_its_own_volume_and_nats_user(helm: str) -> None:
    assert not [o for o in render(helm) if o["metadata"]["name"] == "clinic-recorder"]
    objects = render(helm, "recorder.enabled=true")
    recorder = named(objects, "StatefulSet", "clinic-recorder")
    assert recorder["spec"]["replicas"] == 1  # it holds each room's recording in memory
    [container] = containers(recorder)
    assert container["args"] == ["mediai", "serve", "recorder"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["NATS_USER"] == "recorder"
    assert env["NATS_PASSWORD"] == {
        "secretKeyRef": {"name": "mediai-nats-users", "key": "recorder"}
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["recordings"] == "/var/lib/mediai/recordings"  # the data folder's recordings/
    [claim] = recorder["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "recordings"
