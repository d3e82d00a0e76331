"""Configuration: one frozen Settings value built from the environment (and `.env`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


def parse_duration(text: str) -> int:
    """Parse a duration such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or ``"3600"`` into seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 2h or 1d")
    amount, unit = int(match.group(1)), match.group(2) or "s"
    return amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


_SIZE_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size(text: str) -> int:
    """Parse a size such as ``"512MiB"``, ``"1GiB"`` or ``"1048576"`` (bytes) into bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a size like 512MiB, 1GiB or a number of bytes")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a MediAI process needs, validated once at start-up and passed down."""

    data_dir: Path = Path(".mediai")
    host: str = "127.0.0.1"
    log_level: str = "INFO"

    nats_url: str = "nats://127.0.0.1:4222"
    nats_replicas: int = 1
    # NATS servers the local stack runs: 1, or a JetStream cluster of 3 (or 5) on this machine.
    # Node i (from 1) takes the client port nats_port + i - 1 and the route port
    # nats_cluster_port + i - 1 (defaults 4222-4224 and 6222-6224: below the kernel's
    # ephemeral range, so never a port the OS hands out as a free one).
    nats_nodes: int = 1
    # The rest of the cluster topology of the local stack (``mediai up --cluster``): LiveKit
    # servers sharing one Redis, replicas of every HTTP service behind the gateway, and agent
    # worker pools (one per worker host). Ports and data folders per node: docs/scaling.md.
    livekit_nodes: int = 1
    service_replicas: int = 1
    agent_pools: int = 1
    # Who this process is on NATS: each component has its own user, with subject permissions
    # (deploy/bus_users.py). Unset: the operator's, from a local stack's data_dir if there is one.
    nats_user: str | None = None
    nats_password: str | None = None
    # The CA that signed the NATS servers' certificates (tls:// URLs); unset: the system's CAs.
    nats_ca: Path | None = None
    # The agent workers' NATS user, which the pool service hands to the workers it starts.
    agent_nats_user: str = "agent"
    agent_nats_password: str | None = None
    database_url: str = "postgresql://postgres@127.0.0.1:54329/mediai"

    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = "mediai-dev"
    # The local dev server's pair; a real deployment sets LIVEKIT_API_KEY/LIVEKIT_API_SECRET.
    livekit_api_secret: str = "mediai-dev-secret-please-change-0123456789"  # noqa: S105
    # True when the LiveKit server is ours to start (no LIVEKIT_URL given).
    livekit_local: bool = True

    # Traces (docs/operations.md, "Traces"): OTLP/HTTP to any backend (production), and Zipkin's
    # JSON to the local stack's Zipkin, which `mediai up` runs (MEDIAI_ZIPKIN) and points its
    # processes at. Requests other than dispatches are sampled at this ratio (dispatches always).
    otel_endpoint: str | None = None
    zipkin_endpoint: str | None = None
    zipkin: bool = True
    trace_sample_ratio: float = 1.0
    # Where a trace is seen, ``{trace_id}`` standing for its id (the web console links to it).
    trace_url_template: str = ""
    # The services `mediai up` starts (default: all of them).
    services: tuple[str, ...] = ()

    gateway_port: int = 8080
    nats_port: int = 4222
    nats_cluster_port: int = 6222
    postgres_port: int = 54329
    livekit_port: int = 7880
    livekit_rtc_tcp_port: int = 7881
    livekit_rtc_udp_port: int = 7882
    token_port: int = 8101
    rooms_port: int = 8102
    webhooks_port: int = 8103
    dispatcher_port: int = 8104
    billing_port: int = 8105
    scheduling_port: int = 8106
    keys_port: int = 8107
    recorder_port: int = 8108
    pool_port: int = 8109
    sessions_port: int = 8110
    # Only in a cluster: LiveKit's Redis, and the gateway's LiveKit listener when
    # livekit_nodes > 1 is livekit_port itself (the nodes then take livekit_node_ports).
    redis_port: int = 6380
    zipkin_port: int = 9411

    token_ttl_default: int = 3600
    token_ttl_max: int = 6 * 3600
    # Signs the short-lived view tokens browsers hold instead of API keys (shared.viewtokens);
    # every service verifies with it. The local stack's default; a deployment sets its own.
    view_token_secret: str = "mediai-dev-view-token-secret-please-change"  # noqa: S105

    # Consumers: a message whose handler fails for an unclassified reason (a bug) is delivered
    # this many times, with these delays in seconds between deliveries, then dead-lettered. An
    # outage of PostgreSQL, NATS or LiveKit never counts: the consumer waits it out.
    consumer_max_deliver: int = 5
    consumer_backoff: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
    # PostgreSQL: how long a query may wait for a pooled connection, and how long a statement
    # may run, in seconds; past either the database counts as unavailable (503, or a consumer
    # that waits), so a hung database is a failure, not a hang.
    db_acquire_timeout: float = 5.0
    db_statement_timeout: float = 15.0

    # Retention of the PHI stream (transcripts, clinical records in transit), in seconds.
    phi_retention: int = 30 * 86400
    # The dead-letter stream is bounded by age and by size (the oldest go first). Consumer inbox
    # rows outlive dead letters (shared.pruning), so a replayed dead letter is still recognised.
    deadletter_retention: int = 30 * 86400
    deadletter_max_bytes: int = 1 << 30
    # Patient data (docs/privacy.md): the keyring of key-encryption keys the key service reads
    # (None: <data_dir>/kek; the MEDIAI_KEK variable, read by the key service alone, wins), how
    # long a process keeps a data key in memory, and how long a patient's clinical record stays
    # readable after its key was last used (then its key is destroyed; 20 years by default).
    kek_file: Path | None = None
    key_cache_ttl: int = 60
    # How long a service trusts an API key it looked up (a revoked key is dropped at once when
    # its ApiKeyRevoked event arrives; this bounds a missed event), and how many keys it holds.
    api_key_cache_ttl: int = 60
    api_key_cache_size: int = 10_000
    clinical_retention: int = 20 * 365 * 86400

    # AI providers of the agent workers (services/agent). OpenAI-compatible means OpenAI itself
    # or an on-premises server (Ollama, vLLM, speaches) so patient audio never leaves the clinic.
    google_api_key: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None

    # Agents: the name workers register under, the default models ("<provider>/<model>"), and
    # extra models a deployment allows (e.g. the ones of its on-premises server).
    agent_name: str = "mediai-agent"
    agent_stt: str = "google/gemini-3.5-transcribe-live"
    agent_llm: str = "google/gemini-2.5-flash"
    agent_tts: str = "google/gemini-2.5-flash-preview-tts"
    agent_realtime: str = "google/gemini-2.5-flash-native-audio-preview-12-2025"
    # Comma-separated, like the variable (MEDIAI_AGENT_MODELS), so it travels to child processes.
    agent_models: str = ""
    # A dispatch with no agent in the room after this many seconds fails (reason no_worker).
    agent_dispatch_deadline: int = 10
    # Seconds between usage reports of a running session (a crash loses at most one).
    agent_usage_period: int = 15
    # Seconds a joined agent may be missing from its room, its session not ended, before its
    # dispatch fails with worker_lost (a worker that died where the pool could not see it).
    agent_lost_grace: int = 60
    # Seconds an agent waits for someone to join an empty room before it leaves.
    agent_empty_room_timeout: int = 300
    # Each pool service's workers (0/0 when an orchestrator runs the workers instead).
    agent_pool_min: int = 1
    agent_pool_max: int = 2
    agent_jobs_per_worker: int = 4
    agent_scale_up_load: float = 0.75
    agent_idle_processes: int = 1
    # Seconds a stopping worker gives its sessions to end gracefully (the local stack stops
    # within 10 s; production wants minutes, below the orchestrator's grace period).
    agent_drain_timeout: int = 3
    # Bytes of unpublished session events the agent spool may hold on this data dir (events
    # wait there while NATS is away; see docs/agents.md, "What survives what").
    agent_spool_max_bytes: int = 64 * 1024 * 1024

    # The medical roles (services/agent, docs/agents-roles.md). Vision: the look_at_patient tool
    # (one camera frame on demand); streaming adds a frame every few seconds (off by default, as
    # the seeds' ENABLE_VISION_STREAMING); ENABLE_VISION=false turns vision off entirely.
    enable_vision: bool = True
    enable_vision_streaming: bool = False
    vision_stream_interval: int = 4
    # The avatar speaking roles show ("" = none, "bey" = Beyond Presence, "tavus"), and the
    # providers' credentials; without them the agent falls back to voice only, with an event.
    agent_avatar: str = ""
    bey_api_key: str | None = None
    bey_avatar_id: str | None = None
    tavus_api_key: str | None = None
    tavus_replica_id: str | None = None
    tavus_persona_id: str | None = None
    # The copilot sends the doctor at most one hint every this many seconds.
    copilot_hint_interval: int = 5

    # Billing: the time zone of billing months and days (invoices, usage by day), how long after
    # a month ends its invoices are issued (late events land first), and how far before an
    # audit's period its replay starts reading the stream (a session may begin before it).
    billing_timezone: str = "America/Sao_Paulo"
    billing_invoice_grace: int = 2 * 86400
    billing_audit_lookback: int = 31 * 86400

    # Rooms: seconds between reconciliations of the read model against LiveKit (it heals after
    # dropped webhooks), and how long an egress start may wait for an egress worker to answer.
    rooms_reconcile_interval: int = 30
    rooms_egress_timeout: int = 10
    # Who records rooms for /v1/egress: "livekit" (LiveKit Egress, run next to the server) or
    # "recorder" (MediAI's own recorder: consultations' audio to Opus/OGG, after the patient's
    # consent, encrypted with the patient's clinical key; docs/recording.md).
    egress_backend: str = "livekit"

    def service_port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    def service_replica_port(self, service: str, replica: int) -> int:
        """The port of replica ``replica`` (from 1) of a service: its port, then + 100 each."""
        return self.service_port(service) + 100 * (replica - 1)

    def livekit_node_ports(self) -> list[tuple[int, int, int]]:
        """(signal, RTC TCP, RTC UDP) ports of each LiveKit node, node 1 first. One node uses
        the settings' ports; in a cluster the gateway balances livekit_port over the nodes,
        which take the ports 10 above, 20 above..."""
        if self.livekit_nodes == 1:
            return [(self.livekit_port, self.livekit_rtc_tcp_port, self.livekit_rtc_udp_port)]
        return [
            (
                self.livekit_port + 10 * i,
                self.livekit_rtc_tcp_port + 10 * i,
                self.livekit_rtc_udp_port + 10 * i,
            )
            for i in range(1, self.livekit_nodes + 1)
        ]

    @property
    def zipkin_url(self) -> str:
        """The local Zipkin's UI."""
        return f"http://{self.host}:{self.zipkin_port}/zipkin/"

    def trace_url(self, trace_id: str) -> str:
        """Where the trace ``trace_id`` (32 hex digits) is seen; "" without a tracing UI."""
        return self.trace_url_template.replace("{trace_id}", trace_id)

    def nats_node_ports(self) -> list[tuple[int, int]]:
        """(client port, route port) of each NATS node of the local stack, node 1 first."""
        return [(self.nats_port + i, self.nats_cluster_port + i) for i in range(self.nats_nodes)]


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        for part in value.split(","):
            parsed = urlsplit(part.strip())
            if parsed.scheme not in schemes or not parsed.netloc:
                raise ValueError(f"{part!r} is not a {'/'.join(schemes)} URL")
        return value

    return parse


def _readable_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{value} is not a readable file")
    return path


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"{value} is not a port number (1-65535)")
    return port


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} must be 1 or more")
    return number


def _positive_duration(value: str) -> int:
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError(f"{value} must be a duration of 1s or more")
    return seconds


def _positive_size(value: str) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError(f"{value} must be 1 byte or more")
    return size


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value} must be 0 or more")
    return number


def _nats_nodes(value: str) -> int:
    number = int(value)
    if number not in (1, 3, 5):
        raise ValueError(f"{value} must be 1, 3 or 5 (a JetStream cluster needs a majority)")
    return number


def _load(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise ValueError(f"{value} must be a load between 0 (exclusive) and 1")
    return number


def _model(value: str) -> str:
    provider, slash, model = value.strip().partition("/")
    if not slash or provider not in ("google", "openai") or not model:
        raise ValueError(f"{value!r} is not <provider>/<model> with provider google or openai")
    return value.strip()


def _models(value: str) -> str:
    return ",".join(_model(part) for part in value.split(",") if part.strip())


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone like America/Sao_Paulo") from None
    return value.strip()


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _avatar(value: str) -> str:
    text = value.strip().lower()
    if text in ("", "none", "off"):
        return ""
    if text not in ("bey", "tavus"):
        raise ValueError(f"{value!r} is not one of none, bey, tavus")
    return text


def _seconds(value: str) -> float:
    number = float(value)
    if not 0 < number <= 3600:
        raise ValueError(f"{value} must be a number of seconds between 0 (exclusive) and 3600")
    return number


def _delays(value: str) -> tuple[float, ...]:
    delays = tuple(_seconds(part) for part in value.split(",") if part.strip())
    if not delays:
        raise ValueError(f"{value!r} is not a comma-separated list of seconds like 0.5,2,10")
    return delays


def _egress_backend(value: str) -> str:
    text = value.strip().lower()
    if text not in ("livekit", "recorder"):
        raise ValueError(f"{value!r} is not one of livekit, recorder")
    return text


def _ratio(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError(f"{value} must be a ratio between 0 and 1")
    return number


def _trace_url_template(value: str) -> str:
    if "{trace_id}" not in value:
        raise ValueError(f"{value!r} has no {{trace_id}} where the trace's id goes")
    _url("http", "https")(value.replace("{trace_id}", "0"))
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return level


# Environment variable -> (Settings field, parser). The names follow the seeds and LiveKit's
# own conventions where they exist (LIVEKIT_*, DATABASE_URL); ours start with MEDIAI_.
# Every port of the local stack, each a setting ``MEDIAI_<NAME>_PORT`` and a field ``<name>_port``.
PORT_NAMES = (
    "gateway",
    "nats",
    "nats_cluster",
    "postgres",
    "livekit",
    "livekit_rtc_tcp",
    "livekit_rtc_udp",
    "token",
    "rooms",
    "webhooks",
    "dispatcher",
    "billing",
    "scheduling",
    "keys",
    "recorder",
    "pool",
    "sessions",
    "redis",
    "zipkin",
)

_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "MEDIAI_DATA_DIR": ("data_dir", Path),
    "MEDIAI_SERVICES": ("services", lambda v: tuple(s.strip() for s in v.split(",") if s.strip())),
    "MEDIAI_HOST": ("host", str),
    "MEDIAI_LOG_LEVEL": ("log_level", _log_level),
    "NATS_URL": ("nats_url", _url("nats", "tls")),
    "MEDIAI_NATS_REPLICAS": ("nats_replicas", _positive_int),
    "MEDIAI_NATS_NODES": ("nats_nodes", _nats_nodes),
    "MEDIAI_LIVEKIT_NODES": ("livekit_nodes", _positive_int),
    "MEDIAI_SERVICE_REPLICAS": ("service_replicas", _positive_int),
    "MEDIAI_AGENT_POOLS": ("agent_pools", _positive_int),
    "NATS_USER": ("nats_user", str),
    "NATS_PASSWORD": ("nats_password", str),
    "NATS_CA": ("nats_ca", _readable_file),
    "MEDIAI_AGENT_NATS_USER": ("agent_nats_user", str),
    "MEDIAI_AGENT_NATS_PASSWORD": ("agent_nats_password", str),
    "DATABASE_URL": ("database_url", _url("postgresql", "postgres")),
    "LIVEKIT_URL": ("livekit_url", _url("ws", "wss", "http", "https")),
    "LIVEKIT_API_KEY": ("livekit_api_key", str),
    "LIVEKIT_API_SECRET": ("livekit_api_secret", str),
    # The key pair of a LiveKit server we start ourselves (LIVEKIT_* means an external one).
    "MEDIAI_LIVEKIT_API_KEY": ("livekit_api_key", str),
    "MEDIAI_LIVEKIT_API_SECRET": ("livekit_api_secret", str),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("otel_endpoint", _url("http", "https")),
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT": ("zipkin_endpoint", _url("http", "https")),
    "MEDIAI_ZIPKIN": ("zipkin", _bool),
    "MEDIAI_TRACE_SAMPLE_RATIO": ("trace_sample_ratio", _ratio),
    "MEDIAI_TRACE_URL_TEMPLATE": ("trace_url_template", _trace_url_template),
    "MEDIAI_API_KEY_CACHE_TTL": ("api_key_cache_ttl", parse_duration),
    "MEDIAI_API_KEY_CACHE_SIZE": ("api_key_cache_size", _positive_int),
    "MEDIAI_CONSUMER_MAX_DELIVER": ("consumer_max_deliver", _positive_int),
    "MEDIAI_CONSUMER_BACKOFF": ("consumer_backoff", _delays),
    "MEDIAI_DB_ACQUIRE_TIMEOUT": ("db_acquire_timeout", _seconds),
    "MEDIAI_DB_STATEMENT_TIMEOUT": ("db_statement_timeout", _seconds),
    "MEDIAI_TOKEN_TTL_DEFAULT": ("token_ttl_default", parse_duration),
    "MEDIAI_TOKEN_TTL_MAX": ("token_ttl_max", parse_duration),
    "MEDIAI_VIEW_TOKEN_SECRET": ("view_token_secret", str),
    "MEDIAI_PHI_RETENTION": ("phi_retention", parse_duration),
    "MEDIAI_DEADLETTER_RETENTION": ("deadletter_retention", _positive_duration),
    "MEDIAI_DEADLETTER_MAX_BYTES": ("deadletter_max_bytes", _positive_size),
    "MEDIAI_KEK_FILE": ("kek_file", Path),
    "MEDIAI_KEY_CACHE_TTL": ("key_cache_ttl", parse_duration),
    "MEDIAI_CLINICAL_RETENTION": ("clinical_retention", parse_duration),
    "GOOGLE_API_KEY": ("google_api_key", str),
    "OPENAI_API_KEY": ("openai_api_key", str),
    "OPENAI_BASE_URL": ("openai_base_url", _url("http", "https")),
    "MEDIAI_AGENT_NAME": ("agent_name", str),
    "MEDIAI_AGENT_STT": ("agent_stt", _model),
    "MEDIAI_AGENT_LLM": ("agent_llm", _model),
    "MEDIAI_AGENT_TTS": ("agent_tts", _model),
    "MEDIAI_AGENT_REALTIME": ("agent_realtime", _model),
    "MEDIAI_AGENT_MODELS": ("agent_models", _models),
    "MEDIAI_AGENT_DISPATCH_DEADLINE": ("agent_dispatch_deadline", parse_duration),
    "MEDIAI_AGENT_USAGE_PERIOD": ("agent_usage_period", parse_duration),
    "MEDIAI_AGENT_LOST_GRACE": ("agent_lost_grace", parse_duration),
    "MEDIAI_AGENT_EMPTY_ROOM_TIMEOUT": ("agent_empty_room_timeout", parse_duration),
    "MEDIAI_AGENT_POOL_MIN": ("agent_pool_min", _non_negative_int),
    "MEDIAI_AGENT_POOL_MAX": ("agent_pool_max", _non_negative_int),
    "MEDIAI_AGENT_JOBS_PER_WORKER": ("agent_jobs_per_worker", _positive_int),
    "MEDIAI_AGENT_SCALE_UP_LOAD": ("agent_scale_up_load", _load),
    "MEDIAI_AGENT_IDLE_PROCESSES": ("agent_idle_processes", _non_negative_int),
    "MEDIAI_AGENT_DRAIN_TIMEOUT": ("agent_drain_timeout", parse_duration),
    "MEDIAI_AGENT_SPOOL_MAX_BYTES": ("agent_spool_max_bytes", _positive_size),
    # The names of the seeds (ENABLE_VISION, BEY_*, TAVUS_*) where they had one.
    "ENABLE_VISION": ("enable_vision", _bool),
    "ENABLE_VISION_STREAMING": ("enable_vision_streaming", _bool),
    "MEDIAI_VISION_STREAM_INTERVAL": ("vision_stream_interval", _positive_int),
    "MEDIAI_AGENT_AVATAR": ("agent_avatar", _avatar),
    "BEY_API_KEY": ("bey_api_key", str),
    "BEY_AVATAR_ID": ("bey_avatar_id", str),
    "TAVUS_API_KEY": ("tavus_api_key", str),
    "TAVUS_REPLICA_ID": ("tavus_replica_id", str),
    "TAVUS_PERSONA_ID": ("tavus_persona_id", str),
    "MEDIAI_COPILOT_HINT_INTERVAL": ("copilot_hint_interval", _positive_int),
    "MEDIAI_BILLING_TIMEZONE": ("billing_timezone", _timezone),
    "MEDIAI_BILLING_INVOICE_GRACE": ("billing_invoice_grace", parse_duration),
    "MEDIAI_BILLING_AUDIT_LOOKBACK": ("billing_audit_lookback", parse_duration),
    "MEDIAI_ROOMS_RECONCILE_INTERVAL": ("rooms_reconcile_interval", parse_duration),
    "MEDIAI_ROOMS_EGRESS_TIMEOUT": ("rooms_egress_timeout", parse_duration),
    "MEDIAI_EGRESS_BACKEND": ("egress_backend", _egress_backend),
    **{f"MEDIAI_{name.upper()}_PORT": (f"{name}_port", _port) for name in PORT_NAMES},
}


def to_environ(settings: Settings) -> dict[str, str]:
    """The environment that makes ``load_settings`` rebuild ``settings`` in a child process."""

    def text(value: object) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    environ = {
        variable: text(getattr(settings, field))
        for variable, (field, _) in _VARIABLES.items()
        if getattr(settings, field) not in (None, ())
    }
    # LIVEKIT_* name an external server; the key pair of a local one travels as MEDIAI_LIVEKIT_*.
    drop = (
        ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
        if settings.livekit_local
        else ("MEDIAI_LIVEKIT_API_KEY", "MEDIAI_LIVEKIT_API_SECRET")
    )
    for variable in drop:
        environ.pop(variable, None)
    return environ


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Build Settings from ``environ`` (default: the process environment) over ``env_file``.

    Raises ConfigError with one line naming the first bad setting.
    """
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    fields: dict[str, Any] = {}
    for variable, (field, parse) in _VARIABLES.items():
        raw = values.get(variable, "").strip()
        if not raw:
            continue
        try:
            fields[field] = parse(raw)
        except ValueError as error:
            raise ConfigError(f"{variable}: {error}") from None

    livekit_given = [
        v for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if values.get(v)
    ]
    if livekit_given and len(livekit_given) < 3:
        missing = sorted(
            {"LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"} - set(livekit_given)
        )
        raise ConfigError(f"{missing[0]}: required when {livekit_given[0]} is set (set all three)")
    if ("nats_user" in fields) != ("nats_password" in fields):
        given, absent = (
            ("NATS_USER", "NATS_PASSWORD")
            if "nats_user" in fields
            else ("NATS_PASSWORD", "NATS_USER")
        )
        raise ConfigError(f"{absent}: required when {given} is set")
    settings = Settings(**fields)
    # The URLs of the local stack follow its host and ports unless given outright.
    host = settings.host
    derived: dict[str, Any] = {}
    if "NATS_URL" not in values:
        derived["nats_url"] = ",".join(
            f"nats://{host}:{client}" for client, _ in settings.nats_node_ports()
        )
        if "MEDIAI_NATS_REPLICAS" not in values:
            derived["nats_replicas"] = min(3, settings.nats_nodes)
        elif settings.nats_replicas > settings.nats_nodes:
            raise ConfigError(
                f"MEDIAI_NATS_REPLICAS: {settings.nats_replicas} replicas need as many NATS "
                f"servers; the local stack runs MEDIAI_NATS_NODES={settings.nats_nodes}"
            )
    if "DATABASE_URL" not in values:
        derived["database_url"] = f"postgresql://postgres@{host}:{settings.postgres_port}/mediai"
    if settings.zipkin and not settings.trace_url_template:
        derived["trace_url_template"] = f"{settings.zipkin_url}traces/{{trace_id}}"
    if livekit_given:
        derived["livekit_local"] = False
    else:
        derived["livekit_url"] = f"ws://{host}:{settings.livekit_port}"
    settings = msgspec.structs.replace(settings, **derived)
    if settings.token_ttl_default > settings.token_ttl_max:
        raise ConfigError("MEDIAI_TOKEN_TTL_DEFAULT: longer than MEDIAI_TOKEN_TTL_MAX")
    if settings.agent_pool_min > settings.agent_pool_max:
        raise ConfigError("MEDIAI_AGENT_POOL_MIN: larger than MEDIAI_AGENT_POOL_MAX")
    if len(settings.livekit_api_secret) < 32:
        raise ConfigError("LIVEKIT_API_SECRET: must be at least 32 characters")
    if len(settings.view_token_secret) < 32:
        raise ConfigError("MEDIAI_VIEW_TOKEN_SECRET: must be at least 32 characters")
    return settings
