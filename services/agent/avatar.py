"""Avatars: a speaking role can appear as a Beyond Presence or Tavus avatar (their livekit
plugins), chosen by the dispatch (its ``avatar``: the dispatcher has already refused one whose
provider is not configured) or else by ``MEDIAI_AGENT_AVATAR``. Without the provider's key, or
when the provider refuses, the job says so with an ``AvatarUnavailable`` event and goes on with
voice only.

Avatar time is metered apart (``avatar_seconds`` of the usage reports): from the moment the
provider's session was created until the agent leaves, which is what the providers bill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from services.agent.consultation import Consultation, utcnow
from shared.config import Settings
from shared.events.clinical import AvatarUnavailable

log = logging.getLogger(__name__)

PROVIDERS = ("bey", "tavus")
JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Choice:
    """The avatar a job should start, or why it cannot (``reason``, ``detail``)."""

    provider: str
    reason: str = ""
    detail: str = ""

    @property
    def usable(self) -> bool:
        return not self.reason


def choose(settings: Settings, *, speaks: bool, asked: str = "") -> Choice | None:
    """What this job shows: the dispatch's ``asked`` avatar ("none" = voice only), or when it
    asked nothing ("", as every dispatch before the field existed) the deployment's. None: no
    avatar (none asked or configured, or a role that does not speak)."""
    provider = asked or settings.agent_avatar
    if not provider or provider == "none" or not speaks:
        return None
    if provider not in PROVIDERS:
        origin = "the dispatch's avatar" if asked else "MEDIAI_AGENT_AVATAR"
        return Choice(
            provider,
            "unknown_provider",
            f"{origin}={provider!r} is not one of {', '.join(PROVIDERS)}",
        )
    key = settings.bey_api_key if provider == "bey" else settings.tavus_api_key
    if not key:
        name = "BEY_API_KEY" if provider == "bey" else "TAVUS_API_KEY"
        return Choice(
            provider,
            "missing_credentials",
            f"{name} is not set: the agent speaks without an avatar",
        )
    return Choice(provider)


def build(provider: str, settings: Settings, identity: str) -> Any:
    """The plugin's AvatarSession (imported only when used: the plugins pull in aiohttp
    sessions and their own logging)."""
    if provider == "bey":
        from livekit.plugins import bey

        return bey.AvatarSession(
            api_key=settings.bey_api_key or "",
            avatar_id=settings.bey_avatar_id or None,
            avatar_participant_identity=identity,
        )
    from livekit.plugins import tavus

    extra: dict[str, Any] = (
        {"pal_id": settings.tavus_persona_id} if settings.tavus_persona_id else {}
    )
    if settings.tavus_replica_id:
        extra["face_id"] = settings.tavus_replica_id
    return tavus.AvatarSession(
        api_key=settings.tavus_api_key or "", avatar_participant_identity=identity, **extra
    )


class Avatar:
    """One session's avatar: started before the session (it takes over the agent's audio
    output), or an event saying why not; its seconds for the usage reports."""

    def __init__(self, consultation: Consultation) -> None:
        self.consultation = consultation
        self.provider = ""
        self._session: Any = None
        self._since: float | None = None
        self._until: float | None = None
        self._watch: asyncio.Task[None] | None = None

    def seconds(self) -> float:
        if self._since is None:
            return 0.0
        return (self._until or time.monotonic()) - self._since

    def _unavailable(self, provider: str, reason: str, detail: str) -> None:
        log.warning("avatar %s unavailable (%s): %s; voice only", provider, reason, detail)
        self.consultation.emit(
            AvatarUnavailable(
                **self.consultation.ids(),
                provider=provider,
                reason=reason,
                detail=detail,
                at=utcnow(),
            )
        )

    async def start(self, agent_session: Any, room: rtc.Room, *, agent_identity: str) -> bool:
        """Start the configured avatar; False (voice only) when none is asked or it failed."""
        settings = self.consultation.settings
        choice = choose(
            settings, speaks=self.consultation.role.speaks, asked=self.consultation.avatar
        )
        if choice is None:
            return False
        if not choice.usable:
            self._unavailable(choice.provider, choice.reason, choice.detail)
            return False
        try:
            avatar = build(choice.provider, settings, f"avatar-{agent_identity}"[:128])
            await avatar.start(
                agent_session,
                room,
                livekit_url=settings.livekit_url,
                livekit_api_key=settings.livekit_api_key,
                livekit_api_secret=settings.livekit_api_secret,
            )
        except Exception as error:  # noqa: BLE001 - any provider failure means voice only
            self._unavailable(choice.provider, "start_failed", type(error).__name__)
            return False
        self.provider, self._session, self._since = choice.provider, avatar, time.monotonic()
        self._watch = asyncio.create_task(self._joined(), name="mediai-avatar-join")
        return True

    async def _joined(self) -> None:
        try:
            await self._session.wait_for_join(timeout=JOIN_TIMEOUT)
        except TimeoutError:
            self._unavailable(
                self.provider, "not_joined", f"the avatar did not join within {JOIN_TIMEOUT:.0f}s"
            )

    def close(self) -> None:
        if self._since is not None and self._until is None:
            self._until = time.monotonic()
        if self._watch is not None:
            self._watch.cancel()
