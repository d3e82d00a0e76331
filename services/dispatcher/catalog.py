"""What may be dispatched: the roles of the registry and the models of each provider.

The role registry is data in the agent's folder (``services/agent/roles/<name>/role.toml``);
the dispatcher reads the few fields it validates against (name, description, what the role does
with dispatch instructions) and never imports the agent's code.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Settings

ROLES_DIR = Path(__file__).resolve().parent.parent / "agent" / "roles"
KINDS = ("stt", "llm", "tts", "realtime")

# The models each provider offers per kind, as "<provider>/<model>". A deployment adds its own
# (e.g. the models of an on-premises OpenAI-compatible server) with MEDIAI_AGENT_MODELS.
MODELS: dict[str, tuple[str, ...]] = {
    "stt": (
        "google/gemini-3.5-transcribe-live",
        "openai/gpt-4o-mini-transcribe",
        "openai/gpt-4o-transcribe",
        "openai/whisper-1",
    ),
    "llm": (
        "google/gemini-2.5-flash",
        "google/gemini-2.5-pro",
        "google/gemini-2.5-flash-lite",
        "google/gemini-3-flash-preview",
        "google/gemini-3-pro-preview",
        "openai/gpt-4o-mini",
        "openai/gpt-4o",
        "openai/gpt-4.1",
        "openai/gpt-4.1-mini",
    ),
    "tts": (
        "google/gemini-2.5-flash-preview-tts",
        "google/gemini-2.5-pro-preview-tts",
        "google/gemini-3.1-flash-tts-preview",
        "openai/gpt-4o-mini-tts",
        "openai/tts-1",
        "openai/tts-1-hd",
    ),
    "realtime": (
        "google/gemini-2.5-flash-native-audio-preview-12-2025",
        "google/gemini-3.1-flash-live-preview",
        "openai/gpt-realtime",
        "openai/gpt-realtime-mini",
    ),
}

# The avatars a dispatch may ask for, and the settings each provider needs ("none" needs none).
# Named as the environment names them, so a refusal tells the operator what to set.
AVATARS: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (),
    "bey": (("BEY_API_KEY", "bey_api_key"), ("BEY_AVATAR_ID", "bey_avatar_id")),
    "tavus": (("TAVUS_API_KEY", "tavus_api_key"), ("TAVUS_REPLICA_ID", "tavus_replica_id")),
}


class RoleRegistryError(Exception):
    """The role registry cannot be read; the message names the file."""


@dataclass(frozen=True)
class RoleInfo:
    name: str
    description: str = ""
    # "append", "replace" (the dispatch may replace the template) or "none"
    instructions: str = "append"


def load_roles(root: Path = ROLES_DIR) -> dict[str, RoleInfo]:
    roles: dict[str, RoleInfo] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        try:
            if (folder / "role.toml").is_file():
                document = tomllib.loads((folder / "role.toml").read_text())
            elif (folder / "role.json").is_file():
                document = json.loads((folder / "role.json").read_text())
            else:
                continue
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, OSError) as error:
            raise RoleRegistryError(f"{folder}: {error}") from None
        name = str(document.get("name", folder.name))
        roles[name] = RoleInfo(
            name=name,
            description=str(document.get("description", "")),
            instructions=str(document.get("instructions", "append")),
        )
    return roles


# The roles this code ships, for the OpenAPI document (a deployment's catalog is built at start).
SHIPPED_ROLES = tuple(load_roles())


@dataclass(frozen=True)
class Catalog:
    """The roles and models a dispatch may name, and the defaults it gets. ``avatars`` maps
    each avatar a dispatch may ask for to the settings it still lacks (empty: usable)."""

    roles: dict[str, RoleInfo]
    models: dict[str, tuple[str, ...]]
    defaults: dict[str, str] = field(default_factory=dict)
    avatars: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"none": ()})

    def resolve_model(self, kind: str, name: str | None) -> str | None:
        """The full ``provider/model`` for a requested name (a bare model name is accepted
        when one provider has it), the default when none is given, None when unknown."""
        if not name:
            return self.defaults.get(kind, "")
        valid = self.models[kind]
        if name in valid:
            return name
        matches = [m for m in valid if m.split("/", 1)[1] == name]
        return matches[0] if len(matches) == 1 else None


def build_catalog(settings: Settings, roles: dict[str, RoleInfo] | None = None) -> Catalog:
    defaults = {
        "stt": settings.agent_stt,
        "llm": settings.agent_llm,
        "tts": settings.agent_tts,
        "realtime": settings.agent_realtime,
    }
    extra = tuple(m for m in settings.agent_models.split(",") if m)
    models = {kind: tuple(dict.fromkeys((*MODELS[kind], defaults[kind], *extra))) for kind in KINDS}
    avatars = {
        name: tuple(env for env, attribute in needs if not getattr(settings, attribute))
        for name, needs in AVATARS.items()
    }
    return Catalog(
        roles=roles if roles is not None else load_roles(),
        models=models,
        defaults=defaults,
        avatars=avatars,
    )
