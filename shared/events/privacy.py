"""What each string of the schema is, for privacy: classified in the types, read by code.

Every field of every event that can hold text (``str``, ``Any``, and the lists, dicts and
structs around them) carries one of four marks, as ``Annotated`` metadata::

    name: Personal = ""                  # names, contacts, free text a person said or wrote
    summary_pt_br: Clinical              # the medical record the law makes the clinic keep
    room: Pseudonym                      # an identifier chosen to carry no name (see below)
    role: Plain                          # not about a person: ids, codes, our own messages

A mark on a container covers everything inside it (``Annotated[dict[str, Any], CLINICAL]``);
``list[Pseudonym]`` marks the items. ``tests/test_privacy.py`` fails, naming the field, when a
string is left unmarked, so a new field cannot slip into the log unclassified.

Personal and clinical fields are sealed (encrypted with the patient's data key) before an event
is published, in place: the value becomes a string token, or ``{"$sealed": token}`` for a
document, so a sealed field must not carry length or pattern constraints (see ``shared.phi``).
Room names, participant identities and ``patient_ref`` are pseudonyms: they appear in NATS
subjects and LiveKit, are never encrypted nor erased, and must therefore never contain a name,
a contact or anything else that identifies a person without the clinic's own records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import inspect

PERSONAL_KIND, CLINICAL_KIND, PSEUDONYM_KIND, PLAIN_KIND = (
    "personal",
    "clinical",
    "pseudonym",
    "none",
)
KINDS = (PERSONAL_KIND, CLINICAL_KIND, PSEUDONYM_KIND, PLAIN_KIND)
SEALED_KINDS = (PERSONAL_KIND, CLINICAL_KIND)

PERSONAL = msgspec.Meta(extra={"pii": PERSONAL_KIND})
CLINICAL = msgspec.Meta(extra={"pii": CLINICAL_KIND})
PSEUDONYM = msgspec.Meta(extra={"pii": PSEUDONYM_KIND})
PLAIN = msgspec.Meta(extra={"pii": PLAIN_KIND})

# Names, contacts, and free text a person said or wrote (transcripts, instructions, hints):
# sealed with the patient's personal-data key, destroyed when the patient is erased.
Personal = Annotated[str, PERSONAL]
# The clinical record (the anamnesis): sealed with the patient's clinical-record key, which
# follows the clinic's retention of medical records instead of erasure.
Clinical = Annotated[str, CLINICAL]
# Room names, identities, patient references: pseudonymous identifiers, never sealed.
Pseudonym = Annotated[str, PSEUDONYM]
# Not about a person: ids, enums, model names, prices, the platform's own messages.
Plain = Annotated[str, PLAIN]

# How a sealed field is sealed: a string becomes a token; a list of strings, a token per item;
# a document (a dict, ``Any``) becomes ``{"$sealed": token}`` of its JSON.
TEXT, TEXTS, DOCUMENT, NESTED, NESTED_LIST = "text", "texts", "document", "nested", "nested_list"


@dataclass(frozen=True)
class FieldClass:
    """A marked (or unmarked: ``kind == ""``) place of a type: ``path`` like
    ``participants_found[].identity``, and a readable ``type``."""

    path: str
    kind: str
    type: str


@dataclass(frozen=True)
class Seal:
    """One step of a type's sealing plan: the attribute ``name``, the ``path`` that is the
    ciphertext's associated data, the ``kind`` (personal/clinical), the ``shape`` of the value,
    and for nested structs the plan ``inner``."""

    name: str
    path: str
    kind: str
    shape: str
    inner: tuple[Seal, ...] = ()


def describe(info: inspect.Type) -> str:
    if isinstance(info, inspect.Metadata):
        return describe(info.type)
    if isinstance(info, inspect.UnionType):
        return " | ".join(describe(t) for t in info.types)
    if isinstance(info, inspect.NoneType):
        return "null"
    if isinstance(info, inspect.DictType):
        return f"object<{describe(info.value_type)}>"
    if isinstance(info, inspect.ListType | inspect.VarTupleType):
        return f"array<{describe(info.item_type)}>"
    if isinstance(info, inspect.StructType):
        return info.cls.__name__
    if isinstance(info, inspect.LiteralType):
        return " | ".join(repr(v) for v in info.values)
    return type(info).__name__.removesuffix("Type").lower()


def _mark(info: inspect.Type) -> str | None:
    if isinstance(info, inspect.Metadata):
        mark = (info.extra or {}).get("pii")
        return str(mark) if mark is not None else None
    return None


def _walk(info: inspect.Type, path: str) -> Iterator[FieldClass]:
    mark = _mark(info)
    if mark is not None:
        yield FieldClass(path, mark, describe(info))
    elif isinstance(info, inspect.Metadata):
        yield from _walk(info.type, path)
    elif isinstance(info, inspect.UnionType):
        for member in info.types:
            yield from _walk(member, path)
    elif isinstance(info, inspect.StrType | inspect.AnyType):
        yield FieldClass(path, "", describe(info))
    elif isinstance(info, inspect.ListType | inspect.VarTupleType | inspect.SetType):
        yield from _walk(info.item_type, f"{path}[]")
    elif isinstance(info, inspect.DictType):
        yield from _walk(info.key_type, f"{path}{{key}}")
        yield from _walk(info.value_type, f"{path}{{}}")
    elif isinstance(info, inspect.StructType):
        for field in info.fields:
            yield from _walk(field.type, f"{path}.{field.name}" if path else field.name)


def classify(cls: type[msgspec.Struct]) -> list[FieldClass]:
    """Every marked place of ``cls``, and every string left unmarked (``kind == ""``)."""
    return list(_walk(inspect.type_info(cls), ""))


def unclassified(cls: type[msgspec.Struct]) -> list[str]:
    """The paths of ``cls`` that can hold text but carry no privacy mark."""
    bad = [f.path for f in classify(cls) if f.kind not in KINDS]
    return bad


def _without_none(info: inspect.Type) -> inspect.Type:
    if isinstance(info, inspect.UnionType):
        members = [t for t in info.types if not isinstance(t, inspect.NoneType)]
        if len(members) == 1:
            return members[0]
    return info


def _step(name: str, path: str, info: inspect.Type) -> Seal | None:
    info = _without_none(info)
    mark = _mark(info)
    if mark is not None:
        if mark not in SEALED_KINDS:
            return None
        assert isinstance(info, inspect.Metadata)
        inner = _without_none(info.type)
        if isinstance(inner, inspect.StrType):
            return Seal(name, path, mark, TEXT)
        if isinstance(inner, inspect.ListType) and isinstance(
            _without_none(inner.item_type), inspect.StrType
        ):
            return Seal(name, path, mark, TEXTS)
        if isinstance(inner, inspect.DictType | inspect.AnyType):
            return Seal(name, path, mark, DOCUMENT)
        raise TypeError(f"{path}: a {describe(inner)} cannot be sealed; mark its fields instead")
    if isinstance(info, inspect.Metadata):
        return _step(name, path, info.type)
    if isinstance(info, inspect.StructType):
        inner_plan = _struct_plan(info, f"{path}.")
        return Seal(name, path, "", NESTED, inner_plan) if inner_plan else None
    if isinstance(info, inspect.ListType) and isinstance(
        _without_none(info.item_type), inspect.StructType
    ):
        item = _without_none(info.item_type)
        assert isinstance(item, inspect.StructType)
        inner_plan = _struct_plan(item, f"{path}[].")
        return Seal(name, path, "", NESTED_LIST, inner_plan) if inner_plan else None
    return None


def _struct_plan(info: inspect.StructType, prefix: str) -> tuple[Seal, ...]:
    steps = (_step(f.name, f"{prefix}{f.name}", f.type) for f in info.fields)
    return tuple(step for step in steps if step is not None)


_PLANS: dict[type[Any], tuple[Seal, ...]] = {}


def sealing_plan(cls: type[msgspec.Struct]) -> tuple[Seal, ...]:
    """What to seal in an instance of ``cls`` (empty: nothing personal, nothing to do)."""
    plan = _PLANS.get(cls)
    if plan is None:
        info = inspect.type_info(cls)
        assert isinstance(info, inspect.StructType)
        plan = _PLANS[cls] = _struct_plan(info, "")
    return plan
