"""Configuration: environment and .env, validated, one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import ConfigError, load_settings, parse_duration, parse_size, to_environ


def test_defaults_describe_the_local_stack() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.livekit_local is True
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.database_url.endswith(":54329/mediai")


def test_ports_move_the_derived_urls() -> None:
    settings = load_settings(
        {"MEDIAI_NATS_PORT": "5000", "MEDIAI_LIVEKIT_PORT": "7990"}, env_file=None
    )
    assert settings.nats_url == "nats://127.0.0.1:5000"
    assert settings.livekit_url == "ws://127.0.0.1:7990"


def test_a_nats_cluster_lists_every_node_and_replicates_streams_three_times() -> None:
    settings = load_settings(
        {"MEDIAI_NATS_NODES": "3", "MEDIAI_NATS_PORT": "5000", "MEDIAI_NATS_CLUSTER_PORT": "6000"},
        env_file=None,
    )
    assert settings.nats_url == "nats://127.0.0.1:5000,nats://127.0.0.1:5001,nats://127.0.0.1:5002"
    assert settings.nats_node_ports() == [(5000, 6000), (5001, 6001), (5002, 6002)]
    assert settings.nats_replicas == 3
    assert load_settings(to_environ(settings), env_file=None) == settings
    assert load_settings({}, env_file=None).nats_replicas == 1


def test_the_trace_url_follows_the_local_zipkin_unless_given() -> None:
    local = load_settings({"MEDIAI_ZIPKIN_PORT": "9500"}, env_file=None)
    assert local.trace_url("ab" * 16) == f"http://127.0.0.1:9500/zipkin/traces/{'ab' * 16}"
    given = load_settings(
        {"MEDIAI_TRACE_URL_TEMPLATE": "https://traces.example/trace/{trace_id}?x=1"},
        env_file=None,
    )
    assert given.trace_url("cd" * 16) == f"https://traces.example/trace/{'cd' * 16}?x=1"
    assert load_settings({"MEDIAI_ZIPKIN": "false"}, env_file=None).trace_url("ef" * 16) == ""
    assert load_settings(to_environ(local), env_file=None) == local


def test_livekit_url_with_credentials_means_an_external_server() -> None:
    settings = load_settings(
        {
            "LIVEKIT_URL": "wss://x.livekit.cloud",
            "LIVEKIT_API_KEY": "k",
            "LIVEKIT_API_SECRET": "s" * 32,
        },
        env_file=None,
    )
    assert settings.livekit_local is False
    assert settings.livekit_url == "wss://x.livekit.cloud"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MEDIAI_GATEWAY_PORT": "eighty"}, "MEDIAI_GATEWAY_PORT"),
        ({"MEDIAI_GATEWAY_PORT": "70000"}, "MEDIAI_GATEWAY_PORT: 70000 is not a port number"),
        ({"NATS_URL": "http://x"}, "NATS_URL"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"MEDIAI_TOKEN_TTL_MAX": "forever"}, "MEDIAI_TOKEN_TTL_MAX"),
        ({"LIVEKIT_URL": "wss://x.livekit.cloud"}, "LIVEKIT_API_KEY: required"),
        ({"MEDIAI_LOG_LEVEL": "loud"}, "MEDIAI_LOG_LEVEL"),
        ({"MEDIAI_NATS_NODES": "2"}, "MEDIAI_NATS_NODES: 2 must be 1, 3 or 5"),
        ({"MEDIAI_NATS_REPLICAS": "3"}, "MEDIAI_NATS_REPLICAS: 3 replicas need as many"),
        ({"MEDIAI_DEADLETTER_MAX_BYTES": "1 gigabyte"}, "MEDIAI_DEADLETTER_MAX_BYTES"),
        ({"MEDIAI_DEADLETTER_RETENTION": "0"}, "MEDIAI_DEADLETTER_RETENTION: 0 must be"),
        ({"MEDIAI_TRACE_SAMPLE_RATIO": "1.5"}, "MEDIAI_TRACE_SAMPLE_RATIO: 1.5 must be a ratio"),
        (
            {"MEDIAI_TRACE_URL_TEMPLATE": "http://t/x"},
            "MEDIAI_TRACE_URL_TEMPLATE: 'http://t/x' has",
        ),
        ({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "zipkin:9411"}, "OTEL_EXPORTER_ZIPKIN_ENDPOINT"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ, env_file=None)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MEDIAI_GATEWAY_PORT=9001\nMEDIAI_TOKEN_PORT=9002\n")
    settings = load_settings({"MEDIAI_TOKEN_PORT": "9003"}, env_file=env_file)
    assert (settings.gateway_port, settings.token_port) == (9001, 9003)


def test_to_environ_round_trips() -> None:
    settings = load_settings(
        {"MEDIAI_GATEWAY_PORT": "9100", "MEDIAI_PHI_RETENTION": "7d"}, env_file=None
    )
    assert load_settings(to_environ(settings), env_file=None) == settings


def test_durations() -> None:
    assert [parse_duration(x) for x in ("90", "90s", "15m", "2h", "1d")] == [
        90,
        90,
        900,
        7200,
        86400,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("2 hours")


def test_sizes() -> None:
    assert [parse_size(x) for x in ("512", "512B", "64KiB", "512MiB", "1GiB", "2TiB")] == [
        512,
        512,
        64 << 10,
        512 << 20,
        1 << 30,
        2 << 40,
    ]
    assert load_settings({}, env_file=None).deadletter_max_bytes == 1 << 30
    with pytest.raises(ValueError, match="not a size"):
        parse_size("1GB")


def test_cli_reports_a_bad_setting_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "status"],
        env={"PATH": "/usr/bin:/bin", "MEDIAI_NATS_PORT": "nope"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mediai: configuration: MEDIAI_NATS_PORT: invalid literal for int() with base 10: 'nope'"
    ]


def test_the_readme_documents_every_setting() -> None:
    from shared.config import _VARIABLES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    undocumented = [
        variable
        for variable in _VARIABLES
        if variable not in readme and not variable.endswith("_PORT")
    ]
    ports = [
        v.removeprefix("MEDIAI_").removesuffix("_PORT") for v in _VARIABLES if v.endswith("_PORT")
    ]
    undocumented += [f"MEDIAI_{p}_PORT" for p in ports if f"`{p}`" not in readme]
    assert not undocumented, f"add to the README's configuration table: {undocumented}"
