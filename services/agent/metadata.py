"""The job metadata of a dispatch, and its validation.

The dispatcher puts the dispatch's own ``AgentDispatchRequested`` event (the whole CloudEvents
document) on the LiveKit dispatch, so the contract between the two services is the shared event
schema and the agent runs exactly what the event log says was requested.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import CODEC, EventDecodeError
from shared.events.agents import AgentDispatchRequested
from shared.naming import IDENTITY, LANGUAGE, ROOM_NAME, TENANT_ID, is_patient_ref

PROVIDERS = ("google", "openai")
INSTRUCTION_MODES = ("append", "replace")


class MetadataError(ValueError):
    """The job metadata cannot start a session; the message is one line saying why."""


@dataclass(frozen=True)
class JobMetadata:
    """A validated dispatch request and the tenant it belongs to."""

    tenant: str
    request: AgentDispatchRequested
    traceparent: str | None = None

    @property
    def dispatch_id(self) -> str:
        return self.request.dispatch_id

    @property
    def models(self) -> list[str]:
        """The models this job uses: stt, llm, tts, or only the realtime one."""
        r = self.request
        return [r.realtime] if r.realtime else [r.stt, r.llm, r.tts]

    @property
    def avatar(self) -> str:
        """The dispatch's avatar: "none", "bey", "tavus", or "" for the deployment's default
        (dispatches recorded before the field existed decode as "")."""
        return self.request.avatar

    @property
    def providers(self) -> list[str]:
        return sorted({split_model(m)[0] for m in self.models})


def split_model(model: str) -> tuple[str, str]:
    """``"openai/gpt-4o-mini"`` -> ``("openai", "gpt-4o-mini")``; MetadataError if malformed."""
    provider, slash, name = model.partition("/")
    if not slash or not name:
        raise MetadataError(f"model {model!r} is not <provider>/<model>")
    if provider not in PROVIDERS:
        raise MetadataError(f"model {model!r}: unknown provider {provider!r} (one of {PROVIDERS})")
    return provider, name


def parse_metadata(raw: str | bytes) -> JobMetadata:
    """Decode and validate job metadata; MetadataError (one line) when it cannot run."""
    if not raw:
        raise MetadataError("the job has no metadata (was it dispatched by the MediAI dispatcher?)")
    try:
        event = CODEC.decode(raw.encode() if isinstance(raw, str) else raw)
    except EventDecodeError as error:
        raise MetadataError(f"malformed job metadata: {error}") from None
    request = event.data
    if not isinstance(request, AgentDispatchRequested):
        raise MetadataError(f"job metadata is a {event.type}, not a dispatch request")
    meta = JobMetadata(tenant=event.tenant, request=request, traceparent=event.traceparent)
    validate(meta)
    return meta


def validate(meta: JobMetadata) -> None:
    r = meta.request
    if not r.dispatch_id:
        raise MetadataError("job metadata has no dispatch_id")
    if not TENANT_ID.fullmatch(meta.tenant):
        raise MetadataError(f"job metadata: {meta.tenant!r} is not a tenant id")
    if not ROOM_NAME.fullmatch(r.room):
        raise MetadataError(f"job metadata: {r.room!r} is not a room name")
    if not LANGUAGE.fullmatch(r.language):
        raise MetadataError(f"job metadata: {r.language!r} is not a language tag like pt-BR")
    if r.instructions_mode not in INSTRUCTION_MODES:
        raise MetadataError(
            f"job metadata: instructions_mode {r.instructions_mode!r} is not one of "
            f"{INSTRUCTION_MODES}"
        )
    if r.participant and not IDENTITY.fullmatch(r.participant):
        raise MetadataError(f"job metadata: {r.participant!r} is not a participant identity")
    if r.patient_ref and not is_patient_ref(r.patient_ref):
        # The value is not repeated: a malformed reference might be a name.
        raise MetadataError("job metadata: patient_ref is not a patient reference")
    if not r.realtime and not (r.stt and r.llm and r.tts):
        raise MetadataError("job metadata needs stt, llm and tts models, or a realtime model")
    for model in meta.models:
        split_model(model)
