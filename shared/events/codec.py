"""The one encoder and decoder of events; no other code turns event bytes into objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec

from shared.events.base import Envelope, Event


class EventDecodeError(ValueError):
    """Bytes that are not a known, well-formed event (a poison message for a consumer)."""


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    # The envelope as read off the wire: ``data`` stays raw until ``type`` tells its schema.
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    tenant: str
    data: msgspec.Raw
    specversion: str
    datacontenttype: str = "application/json"
    traceparent: str | None = None


Upcaster = Callable[[Any], Event]


class EventCodec:
    """Encodes envelopes and decodes them back, upcasting old versions to the current ones."""

    def __init__(
        self,
        current: Iterable[type[Event]],
        legacy: Iterable[tuple[type[msgspec.Struct], str, Upcaster]] = (),
    ) -> None:
        self._encoder = msgspec.json.Encoder()
        self._envelope_decoder = msgspec.json.Decoder(_WireEnvelope)
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._upcasters: dict[str, Upcaster] = {}
        self.types: dict[str, type[Event]] = {}
        for cls in current:
            if cls.TYPE in self.types:
                raise ValueError(f"event type {cls.TYPE} is declared twice")
            self.types[cls.TYPE] = cls
            self._decoders[cls.TYPE] = msgspec.json.Decoder(cls)
        for old_cls, old_type, upcast in legacy:
            if old_type in self.types:
                raise ValueError(f"legacy type {old_type} is also a current type")
            self._decoders[old_type] = msgspec.json.Decoder(old_cls)
            self._upcasters[old_type] = upcast

    def encode(self, event: Envelope) -> bytes:
        if event.type not in self.types:
            raise ValueError(f"{event.type} is not in the event schema")
        return self._encoder.encode(event)

    def decode(self, payload: bytes) -> Envelope:
        """Decode an event, upcasting an old version to the current one."""
        try:
            wire = self._envelope_decoder.decode(payload)
            decoder = self._decoders.get(wire.type)
            if decoder is None:
                raise EventDecodeError(f"unknown event type {wire.type!r}")
            data = decoder.decode(wire.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise EventDecodeError(str(error)) from None
        while wire.type in self._upcasters:
            data = self._upcasters[wire.type](data)
            wire = msgspec.structs.replace(wire, type=data.TYPE)
        return Envelope(
            id=wire.id,
            source=wire.source,
            type=wire.type,
            subject=wire.subject,
            time=wire.time,
            tenant=wire.tenant,
            data=data,
            specversion=wire.specversion,
            datacontenttype=wire.datacontenttype,
            traceparent=wire.traceparent,
        )
