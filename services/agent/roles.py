"""Roles as data: the registry of role definitions and how a role's prompt is rendered.

A role is a folder ``roles/<name>/`` with ``role.toml`` (or ``role.json``) and one prompt per
language, ``prompt.<language>.md`` (``prompt.pt-BR.md`` is required and is the fallback). Other
files in the folder (e.g. a questionnaire) belong to the role's own code and are ignored here.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from shared.participants import PERSON_ROLES

ROLES_DIR = Path(__file__).resolve().parent / "roles"
DEFAULT_LANGUAGE = "pt-BR"
PLACEHOLDER = "{{instructions}}"
# Where the dispatch's instructions go when the template has no placeholder.
APPENDED_HEADING = "## Instruções desta consulta"


class RoleError(ValueError):
    """A role definition is invalid, or a dispatch asks a role for something it does not allow."""


class Role(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One role definition (the fields of ``role.toml``; ``prompts`` come from the .md files)."""

    name: str
    description: str = ""
    # What a dispatch may do with its instructions: "append" (added to the template),
    # "replace" (appended, or replacing the template when the dispatch asks), "none" (ignored:
    # the dispatcher rejects a dispatch that sends some).
    instructions: Literal["append", "replace", "none"] = "append"
    # True: talks to the room with voice. False: sends text only, on the text stream topic
    # ``text_topic``, to the people whose token gives them one of the roles ``text_to``
    # (``mediai.role``: "patient" or "doctor", shared/participants.py), never by identity.
    speaks: bool = True
    text_to: list[str] = msgspec.field(default_factory=list)
    text_topic: str = "mediai.agent.text"
    # Identity prefixes of the participants it listens to; empty: the dispatch's
    # ``participant``, or the first person to join.
    listens_to: list[str] = msgspec.field(default_factory=list)
    # Names of the tools it may call (see services/agent/tools.py).
    tools: list[str] = msgspec.field(default_factory=list)
    # Said when the session starts ("" = say nothing and wait), and when it ends gracefully.
    greeting: str = ""
    goodbye: str = "Obrigado pela conversa. Até logo!"
    # Whether it may look at participants' cameras (video is subscribed and metered).
    vision: bool = False
    prompts: dict[str, str] = msgspec.field(default_factory=dict)

    def template(self, language: str) -> str:
        return self.prompts.get(language) or self.prompts[DEFAULT_LANGUAGE]


def load_role(folder: Path) -> Role:
    """Read one role folder; RoleError (one line naming the file) when it is invalid."""
    toml_path, json_path = folder / "role.toml", folder / "role.json"
    try:
        if toml_path.is_file():
            document: dict[str, Any] = tomllib.loads(toml_path.read_text())
            source = toml_path
        elif json_path.is_file():
            document = json.loads(json_path.read_text())
            source = json_path
        else:
            raise RoleError(f"{folder}: no role.toml or role.json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise RoleError(f"{folder}: {error}") from None
    prompts = {
        path.name.removeprefix("prompt.").removesuffix(".md"): path.read_text().strip()
        for path in sorted(folder.glob("prompt.*.md"))
    }
    try:
        role = msgspec.convert({**document, "prompts": prompts}, Role)
    except msgspec.ValidationError as error:
        raise RoleError(f"{source}: {error}") from None
    if role.name != folder.name:
        raise RoleError(f"{source}: name {role.name!r} must match its folder {folder.name!r}")
    if not role.prompts.get(DEFAULT_LANGUAGE):
        raise RoleError(f"{folder}: prompt.{DEFAULT_LANGUAGE}.md is missing or empty")
    if not role.speaks and not role.text_to:
        raise RoleError(f"{source}: a role that does not speak needs text_to (who reads it)")
    unknown = sorted(set(role.text_to) - set(PERSON_ROLES))
    if unknown:
        raise RoleError(
            f"{source}: text_to {unknown} are not roles a token gives; use {list(PERSON_ROLES)}"
        )
    return role


def load_registry(root: Path = ROLES_DIR) -> dict[str, Role]:
    """Every role under ``root``, by name."""
    roles = [
        load_role(folder)
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(("_", "."))
    ]
    return {role.name: role for role in roles}


def render_instructions(role: Role, *, language: str, instructions: str, mode: str) -> str:
    """The system prompt of a session: the role's template and the dispatch's instructions.

    ``mode`` "append" adds the instructions (at ``{{instructions}}`` if the template has it,
    else under a heading at the end); "replace" uses them instead of the template, which only
    a role with ``instructions = "replace"`` allows.
    """
    template = role.template(language)
    instructions = instructions.strip()
    if mode == "replace":
        if role.instructions != "replace":
            raise RoleError(f"role {role.name!r} does not allow replacing its instructions")
        if instructions:
            return instructions
    if instructions and role.instructions == "none":
        raise RoleError(f"role {role.name!r} does not take instructions from the dispatch")
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, instructions).strip()
    if not instructions:
        return template
    return f"{template}\n\n{APPENDED_HEADING}\n\n{instructions}"
