"""The AI providers an agent can use, their credentials, and the plugin objects built from them.

``google`` is Gemini through livekit-plugins-google (Gemini STT, LLM and TTS, or the Gemini Live
realtime model) with ``GOOGLE_API_KEY``. ``openai`` is any OpenAI-compatible endpoint through
livekit-plugins-openai with ``OPENAI_API_KEY`` and an optional ``OPENAI_BASE_URL`` (OpenAI itself,
or an on-premises Ollama/vLLM/speaches server, so patient audio never leaves the clinic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.agent.metadata import JobMetadata, split_model
from shared.config import Settings


class ProviderError(Exception):
    """A provider cannot be used; ``reason`` is the stable code for the failure event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def missing_credentials(settings: Settings) -> dict[str, str]:
    """Provider -> the one line saying which setting it lacks (empty when all are usable)."""
    missing: dict[str, str] = {}
    if not settings.google_api_key:
        missing["google"] = "GOOGLE_API_KEY is not set"
    if not settings.openai_api_key:
        missing["openai"] = "OPENAI_API_KEY is not set (any value for a server without keys)"
    return missing


def check_credentials(meta: JobMetadata, settings: Settings) -> None:
    """ProviderError(missing_credentials) when a provider this job uses has no credentials."""
    missing = missing_credentials(settings)
    for provider in meta.providers:
        if provider in missing:
            raise ProviderError("missing_credentials", f"provider {provider}: {missing[provider]}")


def stt_language(provider: str, language: str) -> str:
    """OpenAI's transcription API takes ISO 639-1 ("pt"); Gemini takes the BCP-47 tag."""
    return language.split("-")[0] if provider == "openai" else language


@dataclass(frozen=True)
class Models:
    """What a session is built from: a pipeline (stt, llm, tts) or one realtime model."""

    llm: Any
    stt: Any = None
    tts: Any = None

    @property
    def realtime(self) -> bool:
        return self.stt is None and self.tts is None


def openai_client(settings: Settings) -> Any:
    """One OpenAI client for a job process, made while it warms up: building one (its TLS
    context, its connection pool) blocks the event loop for a few hundred milliseconds, which a
    job would otherwise spend before it joins the room. None without OpenAI credentials."""
    if not settings.openai_api_key:
        return None
    # openai's SDK talks through httpx2 (the fork it depends on), like livekit's plugin does.
    import httpx2 as httpx
    import openai

    return openai.AsyncClient(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url or None,
        max_retries=0,  # livekit-agents retries by itself
        http_client=httpx.AsyncClient(
            timeout=httpx.Timeout(connect=15.0, read=10.0, write=5.0, pool=5.0),
            follow_redirects=True,
            limits=httpx.Limits(
                max_connections=50, max_keepalive_connections=50, keepalive_expiry=120
            ),
        ),
    )


def build_models(
    meta: JobMetadata, settings: Settings, *, speaks: bool, client: Any = None
) -> Models:
    """The plugin objects for a job; ``speaks`` false builds no TTS (text-only roles).
    ``client`` is a ready OpenAI client (see ``openai_client``) the openai plugins share."""
    check_credentials(meta, settings)
    request = meta.request
    openai_args = {"client": client} if client is not None else _openai_args(settings)
    if request.realtime:
        return Models(llm=_realtime(request.realtime, request.language, settings))
    return Models(
        stt=_stt(request.stt, request.language, settings, openai_args),
        llm=_llm(request.llm, settings, openai_args),
        tts=_tts(request.tts, settings, openai_args) if speaks else None,
    )


def _openai_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {"api_key": settings.openai_api_key or ""}
    if settings.openai_base_url:
        args["base_url"] = settings.openai_base_url
    return args


def _stt(model: str, language: str, settings: Settings, openai_args: dict[str, Any]) -> Any:
    provider, name = split_model(model)
    if provider == "openai":
        from livekit.plugins import openai

        return openai.STT(model=name, language=stt_language(provider, language), **openai_args)
    from livekit.plugins import google

    return google.beta.GeminiSTT(
        model=name, language=language, api_key=settings.google_api_key or ""
    )


def _llm(model: str, settings: Settings, openai_args: dict[str, Any]) -> Any:
    provider, name = split_model(model)
    if provider == "openai":
        from livekit.plugins import openai

        return openai.LLM(model=name, **openai_args)
    from livekit.plugins import google

    return google.LLM(model=name, api_key=settings.google_api_key or "")


def _tts(model: str, settings: Settings, openai_args: dict[str, Any]) -> Any:
    provider, name = split_model(model)
    if provider == "openai":
        from livekit.plugins import openai

        # Raw 24 kHz PCM, not the plugin's default MP3: nothing to decode (MP3 goes through
        # PyAV's decoder, in a thread, for every answer), and OpenAI's fastest to a first byte.
        return openai.TTS(model=name, response_format="pcm", **openai_args)
    from livekit.plugins import google

    return google.beta.GeminiTTS(model=name, api_key=settings.google_api_key or "")


def _realtime(model: str, language: str, settings: Settings) -> Any:
    provider, name = split_model(model)
    if provider == "openai":
        from livekit.plugins import openai

        return openai.realtime.RealtimeModel(model=name, **_openai_args(settings))
    from livekit.plugins import google

    return google.realtime.RealtimeModel(
        model=name, api_key=settings.google_api_key or "", language=language
    )
