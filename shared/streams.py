"""The streams of the system, declared on purpose.

``stream_configs`` is the declaration. The operator creates the streams that are missing
(``mediai up`` at start, ``mediai streams apply``), and nothing changes one that exists on its
own: a process started with the wrong settings (a CLI run without the production environment)
must not turn an R3 stream into R1 or cut its retention. Services may not create streams at all
(their NATS users have no such permission; docs/deployment.md): they check them at start, and
when a stream is missing or differs from the declaration, say so in one log line and carry
on; ``mediai streams`` shows every difference and ``mediai streams apply`` applies the
declaration, refusing any change that weakens a stream unless told to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from shared import subjects
from shared.config import Settings
from shared.events import DEADLETTER_STREAM, EVENTS_STREAM, PHI_STREAM

log = logging.getLogger(__name__)

# LiveKit retries webhooks for minutes; keep an hour. The outbox keeps published rows a while
# longer than this (shared.pruning), so a relay's republish is always recognised.
DUPLICATE_WINDOW_SECONDS = 3600.0

# The settings the declaration owns; anything else on a stream (placement, compression, …) is
# left as an operator set it.
_FIELDS = (
    "subjects",
    "storage",
    "retention",
    "num_replicas",
    "max_age",
    "max_bytes",
    "max_msgs",
    "discard",
    "duplicate_window",
    "description",
)


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """Every stream of the system. File storage, explicit retention, replicas per settings."""

    def stream(
        name: str, description: str, *, max_age: float = 0, max_bytes: int = -1
    ) -> StreamConfig:
        return StreamConfig(
            name=subjects.stream_name(name),
            description=description,
            subjects=[subjects.stream_subjects(name)],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=max_age,
            max_bytes=max_bytes,
            max_msgs=-1,
            discard=DiscardPolicy.OLD,
            # JetStream refuses a duplicate window longer than the stream's age limit.
            duplicate_window=min(DUPLICATE_WINDOW_SECONDS, max_age or math.inf),
            num_replicas=settings.nats_replicas,
        )

    return [
        stream(EVENTS_STREAM, "Business events; kept for billing audits (0 = no age limit)"),
        stream(
            PHI_STREAM, "Personal health data in transit", max_age=float(settings.phi_retention)
        ),
        stream(
            DEADLETTER_STREAM,
            "Messages consumers gave up on, for operators to replay",
            max_age=float(settings.deadletter_retention),
            max_bytes=settings.deadletter_max_bytes,
        ),
    ]


@dataclass(frozen=True)
class Difference:
    """One setting of a stream that differs from its declaration."""

    field: str
    declared: Any
    actual: Any
    # Applying the declaration would make the stream keep less, or keep it less safely.
    weakens: bool

    def __str__(self) -> str:
        strength = "weakens" if self.weakens else "strengthens"
        return (
            f"{self.field} declared {show(self.field, self.declared)}, "
            f"actual {show(self.field, self.actual)} (applying it {strength} the stream)"
        )


def _limit(value: float | None) -> float:
    """A JetStream limit as a number: 0 or a negative value (or none) means unlimited."""
    return math.inf if value is None or value <= 0 else value


def _weakens(field: str, declared: Any, actual: Any) -> bool:
    if field in ("max_age", "max_bytes", "max_msgs"):
        return _limit(declared) < _limit(actual)
    if field in ("num_replicas", "duplicate_window"):
        return bool((declared or 0) < (actual or 0))
    if field == "subjects":
        return not set(actual or ()) <= set(declared or ())  # a captured subject dropped
    if field == "discard":
        return bool(declared == DiscardPolicy.OLD)  # full streams would drop, not refuse
    # A description changes nothing; storage or retention policy change how messages are kept.
    return field != "description"


def differences(declared: StreamConfig, actual: StreamConfig) -> list[Difference]:
    """What applying ``declared`` to a stream configured as ``actual`` would change."""
    found = []
    for field in _FIELDS:
        want, have = getattr(declared, field), getattr(actual, field)
        if field == "subjects":
            want, have = sorted(want or ()), sorted(have or ())
        if want != have:
            found.append(Difference(field, want, have, _weakens(field, want, have)))
    return found


def show(field: str, value: Any) -> str:
    """A setting as an operator reads it: 30d, 1GiB, unlimited, file."""
    if field in ("max_age", "duplicate_window"):
        return "unlimited" if not value else _duration(float(value))
    if field == "max_bytes":
        return "unlimited" if _limit(value) == math.inf else size(int(value))
    if field == "max_msgs":
        return "unlimited" if _limit(value) == math.inf else str(value)
    if field == "subjects":
        return ",".join(value)
    if field == "description":
        return repr(value)
    return str(getattr(value, "value", value))


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{int(seconds // length)}{unit}"
    return f"{seconds:g}s"


def size(count: int) -> str:
    for unit, length in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= length:
            amount = count / length
            return f"{amount:.0f}{unit}" if amount == int(amount) else f"{amount:.1f}{unit}"
    return f"{count}B"


@dataclass(frozen=True)
class StreamStatus:
    """A declared stream as it is on the server (``info`` is None when it does not exist)."""

    declared: StreamConfig
    info: StreamInfo | None

    @property
    def name(self) -> str:
        return str(self.declared.name)

    @property
    def differences(self) -> list[Difference]:
        return [] if self.info is None else differences(self.declared, self.info.config)


async def _info(js: JetStreamContext, name: str) -> StreamInfo | None:
    try:
        return await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return None


async def stream_status(
    js: JetStreamContext, declared: Sequence[StreamConfig]
) -> list[StreamStatus]:
    """Each declared stream with its state on the server."""
    return [StreamStatus(config, await _info(js, str(config.name))) for config in declared]


async def create_missing_streams(js: JetStreamContext, declared: Sequence[StreamConfig]) -> None:
    """At the operator's start (``mediai up``): create the streams that do not exist, never
    change one that does, and log one line for each that differs from its declaration."""
    for config in declared:
        info = await _info(js, str(config.name))
        if info is None:
            try:
                await js.add_stream(config)
                log.info("created stream %s", config.name)
                continue
            except nats.js.errors.APIError:
                # Another process may have created it a moment ago, perhaps with other settings.
                info = await _info(js, str(config.name))
                if info is None:
                    raise
        _log_differences(config, info)


async def check_streams(js: JetStreamContext, declared: Sequence[StreamConfig]) -> None:
    """At a service's start: one log line for each stream that is missing or differs from its
    declaration. A service may not create streams (its NATS user has no such permission): the
    declaration is applied by the operator, as migrations are."""
    for config in declared:
        info = await _info(js, str(config.name))
        if info is None:
            log.error(
                "stream %s is missing; run 'mediai streams apply' (publishing to it fails until then)",
                config.name,
            )
            continue
        _log_differences(config, info)


def _log_differences(config: StreamConfig, info: StreamInfo) -> None:
    found = differences(config, info.config)
    if found:
        log.warning(
            "stream %s left as it is: %s; run 'mediai streams apply' to apply the declaration",
            config.name,
            "; ".join(str(difference) for difference in found),
        )


class StreamApplyError(Exception):
    """The declaration was not applied: it would weaken a stream and that was not allowed, or
    the server refused a change. The message is one line."""


async def apply_streams(
    js: JetStreamContext,
    declared: Sequence[StreamConfig],
    *,
    allow_weaken: bool = False,
    report: Callable[[str], object] = lambda line: None,
) -> list[str]:
    """Bring every stream to its declaration; ``report`` gets one line per change as it is made,
    and the lines are returned.

    Nothing is changed when a change would weaken a stream and ``allow_weaken`` is false.
    """
    statuses = await stream_status(js, declared)
    weakening = [
        f"{status.name} {d.field} {show(d.field, d.actual)} -> {show(d.field, d.declared)}"
        for status in statuses
        for d in status.differences
        if d.weakens
    ]
    if weakening and not allow_weaken:
        raise StreamApplyError(
            f"not applied, it would weaken {', '.join(weakening)}; "
            "run 'mediai streams apply --allow-weaken' to apply it anyway"
        )
    changes: list[str] = []
    for status in statuses:
        found = status.differences
        try:
            if status.info is None:
                await js.add_stream(status.declared)
                lines = [f"created {status.name}"]
            elif found:
                # Only the declared settings change; the rest stays as the server has it.
                managed = {field: getattr(status.declared, field) for field in _FIELDS}
                await js.update_stream(status.info.config.evolve(**managed))
                lines = [
                    f"{status.name}: {d.field} {show(d.field, d.actual)} -> "
                    f"{show(d.field, d.declared)}" + (" (weakens)" if d.weakens else "")
                    for d in found
                ]
            else:
                continue
        except nats.js.errors.APIError as error:
            raise StreamApplyError(
                f"{status.name}: NATS refused the change: {error.description}"
            ) from None
        for line in lines:
            report(line)
        changes += lines
    return changes


def describe(status: StreamStatus) -> str:
    """One line: the stream's key settings and what it holds."""
    if status.info is None:
        return f"{status.name:<20} missing"
    config, state = status.info.config, status.info.state
    return (
        f"{status.name:<20} {show('storage', config.storage)} R{config.num_replicas}"
        f"  max_age {show('max_age', config.max_age)}"
        f"  max_bytes {show('max_bytes', config.max_bytes)}"
        f"  dedup {show('duplicate_window', config.duplicate_window)}"
        f"  discard {show('discard', config.discard)}"
        f"  {state.messages} messages, {size(state.bytes)}"
    )
