"""What a failure means: a dependency that is away (wait and retry), or a message that can never
succeed (dead-letter it), or neither (a bug: bounded retries).

Consumers, background tasks and the HTTP edge all ask ``unavailable_dependency`` the same
question, so "PostgreSQL is restarting" is never mistaken for a poison message, and never answered
with a 500.
"""

from __future__ import annotations

import asyncpg
import nats.errors
import nats.js.errors

from shared.bus import BusUnavailableError


class PoisonMessageError(Exception):
    """Raised by a handler for a message that can never succeed: dead-letter it at once."""


class DependencyUnavailableError(Exception):
    """A dependency (``postgres``, ``nats``, ``livekit``…) cannot be reached right now.

    Raise it where the code knows which dependency failed and the generic classification below
    cannot tell (e.g. a LiveKit call answering 503)."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency} unavailable{': ' + detail if detail else ''}")
        self.dependency = dependency


_NATS_AWAY = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.errors.FlushTimeoutError,
    nats.errors.NoServersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

_POSTGRES_AWAY = (
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, out of memory/disk
    asyncpg.QueryCanceledError,  # 57014: the statement timeout fired (a hung database)
    asyncpg.SerializationError,  # 40001: retrying the transaction is the documented remedy
    asyncpg.DeadlockDetectedError,  # 40P01: likewise
)

# Where an OSError or a timeout came from decides whose outage it is: the innermost frame of
# one of these packages names the dependency.
_PACKAGES = {"asyncpg": "postgres", "nats": "nats", "aiohttp": "livekit", "livekit": "livekit"}


def unavailable_dependency(error: BaseException) -> str | None:
    """The dependency ``error`` says is away (``"postgres"``, ``"nats"``, ``"livekit"``…), or
    None when the error is not an outage (a bug, bad data)."""
    named = getattr(error, "dependency", None)  # DependencyUnavailableError, or a service's own
    if isinstance(named, str):
        return named
    if isinstance(error, (BusUnavailableError, *_NATS_AWAY)):
        return "nats"
    if isinstance(error, _POSTGRES_AWAY):
        return "postgres"
    if isinstance(error, asyncpg.InterfaceError) and "closed" in str(error):
        return "postgres"  # the connection was closed under the query (the server went away)
    if isinstance(error, TimeoutError | OSError):
        return _origin(error)
    return None


def _origin(error: BaseException) -> str | None:
    found = None
    traceback = error.__traceback__
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        package = _PACKAGES.get(module.partition(".")[0])
        if package is not None:
            found = package
        traceback = traceback.tb_next
    if found is None and error.__context__ is not None and error.__context__ is not error:
        return _origin(error.__context__)
    return found
