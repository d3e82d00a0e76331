"""Write a golden file for an event type from example values: python -m tests.golden.make TYPE."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect

from shared.events import CODEC, envelope

WHEN = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)


def example(info: inspect.Type) -> Any:
    if isinstance(info, inspect.Metadata):  # a privacy mark (shared/events/privacy.py)
        return example(info.type)
    if isinstance(info, inspect.UnionType):
        concrete = [t for t in info.types if not isinstance(t, inspect.NoneType)]
        return example(concrete[0])
    if isinstance(info, inspect.StrType | inspect.LiteralType):
        return info.values[0] if isinstance(info, inspect.LiteralType) else "example"
    if isinstance(info, inspect.BoolType):
        return True
    if isinstance(info, inspect.IntType):
        return 3
    if isinstance(info, inspect.FloatType):
        return 1.5
    if isinstance(info, inspect.DateTimeType):
        return WHEN
    if isinstance(info, inspect.DictType):
        return {"key": example(info.value_type)}
    if isinstance(info, inspect.ListType | inspect.TupleType | inspect.VarTupleType):
        return [example(info.item_type)] if hasattr(info, "item_type") else []
    if isinstance(info, inspect.StructType):
        return info.cls(**{f.name: example(f.type) for f in info.fields})
    return None


def main(event_type: str) -> Path:
    cls = CODEC.types[event_type]
    info = inspect.type_info(cls)
    assert isinstance(info, inspect.StructType)
    data = cls(**{f.name: example(f.type) for f in info.fields})
    document = envelope(
        data,
        source="mediai/golden",
        tenant="tgolden0001",
        subject="example",
        time=WHEN,
        event_id="01943000-0000-7000-8000-000000000001",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    path = Path(__file__).parent / "events" / f"{event_type}.json"
    path.write_bytes(msgspec.json.format(CODEC.encode(document)) + b"\n")
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(CODEC.types):
        target = Path(__file__).parent / "events" / f"{name}.json"
        if target.exists():
            continue  # never rewrite the golden file of a published version
        print(main(name))
