"""Renders docs/events.md from the schema itself, so the event docs can never drift."""

from __future__ import annotations

import importlib
import inspect as pyinspect
import pkgutil
from collections import defaultdict

from msgspec import inspect

import services
from shared.consumer import ConsumerSpec
from shared.events import CODEC, Event
from shared.events.legacy import LEGACY
from shared.events.privacy import classify

HEADER = """# Events

Generated from `shared/events/` by `mediai docs events`; do not edit by hand (CI checks it).

Every event is a CloudEvents 1.0 structured-mode JSON document: `specversion`, `id` (UUIDv7, or
the producer's natural dedup key such as a LiveKit webhook id), `source` (`mediai/<service>`),
`type` (below), `subject` (the aggregate's key: a room name, a dispatch id), `time`,
`datacontenttype`, `data` (the fields below), and the extensions `tenant` and `traceparent`.
It is published on `mediai.<stream>.<type without "mediai.">.<tenant>.<subject>` with the
`Nats-Msg-Id` header set to its `id` and the W3C `traceparent` header.

Streams: `events` (MEDIAI_EVENTS, the business log, no age limit: billing audits replay it),
`phi` (MEDIAI_PHI, personal health data such as transcripts and clinical records, short
retention, never read by billing), `deadletter` (MEDIAI_DEADLETTER, messages a consumer gave up
on; `mediai deadletters list|replay`).

Versioning: fields are only ever added, with defaults; a type never changes its meaning. A
breaking change is a new `.vN` type; the old version stays readable through an upcaster in
`shared/events/legacy.py`, and a golden file of every version is decoded by the tests.

Privacy (docs/privacy.md): every text field is classified in the schema. **personal** and
**clinical** fields are sealed (AES-256-GCM with the patient's data key, in place: a string
`enc:v1:…`, or `{"$sealed": "enc:v1:…"}` for a document) before the event is published;
**pseudonym** fields (room names, identities, `patient_ref`) travel in clear and must never
contain a name; the rest is not about a person.
"""

_RANK = {"personal": 3, "clinical": 3, "pseudonym": 2, "none": 1}


def privacy_of(cls: type[Event]) -> dict[str, str]:
    """Each top-level field's most sensitive class (a nested field counts for its parent)."""
    found: dict[str, str] = {}
    for place in classify(cls):
        name = place.path.split(".")[0].split("[")[0].split("{")[0]
        if _RANK.get(place.kind, 0) > _RANK.get(found.get(name, ""), 0):
            found[name] = place.kind
    return found


def _privacy_cell(kind: str) -> str:
    return {"personal": "personal, sealed", "clinical": "clinical, sealed"}.get(
        kind, kind if kind == "pseudonym" else ""
    )


def _consumers() -> dict[str, list[str]]:
    """Event type -> the durable consumers (service/durable) that read it."""
    found: dict[str, set[str]] = defaultdict(set)
    for module_info in pkgutil.walk_packages(services.__path__, "services."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, ConsumerSpec):
                service = module_info.name.split(".")[1]
                for event_type in value.events:
                    found[event_type.TYPE].add(f"{service} (`{value.durable}`)")
    return {k: sorted(v) for k, v in found.items()}


def _type_name(info: inspect.Type) -> str:
    if isinstance(info, inspect.Metadata):  # a privacy mark: the type is inside
        return _type_name(info.type)
    if isinstance(info, inspect.UnionType):
        return " | ".join(_type_name(t) for t in info.types)
    if isinstance(info, inspect.NoneType):
        return "null"
    if isinstance(info, inspect.DictType):
        return f"object<{_type_name(info.value_type)}>"
    if isinstance(info, inspect.ListType | inspect.VarTupleType):
        return f"array<{_type_name(info.item_type)}>"
    if isinstance(info, inspect.StructType):
        return info.cls.__name__
    if isinstance(info, inspect.LiteralType):
        return " | ".join(repr(v) for v in info.values)
    return type(info).__name__.removesuffix("Type").lower()


def render() -> str:
    consumers = _consumers()
    lines = [HEADER]
    by_area: dict[str, list[type[Event]]] = defaultdict(list)
    for cls in CODEC.types.values():
        by_area[cls.TYPE.split(".")[1]].append(cls)
    lines.append("| type | stream | producer | consumers |\n|---|---|---|---|")
    for cls in sorted(CODEC.types.values(), key=lambda c: c.TYPE):
        lines.append(
            f"| [`{cls.TYPE}`](#{cls.TYPE.replace('.', '')}) | {cls.STREAM} | {cls.PRODUCER} | "
            f"{', '.join(consumers.get(cls.TYPE, [])) or '—'} |"
        )
    for area in sorted(by_area):
        lines.append(f"\n## {area}\n")
        for cls in sorted(by_area[area], key=lambda c: c.TYPE):
            doc = pyinspect.cleandoc(cls.__doc__ or "")
            lines.append(
                f"### {cls.TYPE}\n\n`{cls.__name__}` · stream `{cls.STREAM}` · "
                f"producer: {cls.PRODUCER}\n\n{doc}\n"
            )
            info = inspect.type_info(cls)
            assert isinstance(info, inspect.StructType)
            privacy = privacy_of(cls)
            lines.append("| field | type | required | privacy |\n|---|---|---|---|")
            for field in info.fields:
                lines.append(
                    f"| `{field.name}` | {_type_name(field.type)} | "
                    f"{'yes' if field.required else 'no'} | "
                    f"{_privacy_cell(privacy.get(field.name, ''))} |"
                )
            lines.append("")
    lines.append("\n## Version history\n")
    if LEGACY:
        for _, old_type, upcast in LEGACY:
            lines.append(f"- `{old_type}`: upcast by `{upcast.__name__}`")
    else:
        lines.append("Every type is at its first version.")
    return "\n".join(lines).rstrip() + "\n"
