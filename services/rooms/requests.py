"""What a tenant's request becomes in LiveKit, free of I/O: data payloads, egress and ingress
requests. Errors are ``RequestError`` with a message for the caller."""

from __future__ import annotations

import base64
import binascii

from livekit import api as lk

from services.rooms.schemas import CreateIngressRequest, SendDataRequest, StartEgressRequest

# LiveKit delivers a reliable data packet only up to this size (its docs: keep under 15 KiB).
MAX_DATA_BYTES = 15 * 1024
# Topics LiveKit's SDKs and agents use for their own streams (lk.chat, lk.transcription...).
RESERVED_TOPIC_PREFIX = "lk."


class RequestError(ValueError):
    """The request cannot be done as asked; the message says why (a 400)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def data_payload(request: SendDataRequest) -> bytes:
    """The bytes to send: the text as UTF-8, or the base64 decoded; never above LiveKit's limit."""
    if request.encoding == "base64":
        try:
            payload = base64.b64decode(request.data, validate=True)
        except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
            raise RequestError("data is not valid base64", "invalid_data") from None
    else:
        payload = request.data.encode()
    if len(payload) > MAX_DATA_BYTES:
        raise RequestError(
            f"data is {len(payload)} bytes; a data message carries at most {MAX_DATA_BYTES}",
            "data_too_large",
        )
    if request.topic is not None and request.topic.startswith(RESERVED_TOPIC_PREFIX):
        raise RequestError(
            f"topics starting with {RESERVED_TOPIC_PREFIX!r} are LiveKit's own", "reserved_topic"
        )
    return payload


def _folder(tenant: str, room: str) -> str:
    # Each tenant's recordings under its own folder, so no tenant can name another's files.
    return f"{tenant}/{room}"


def egress_request(
    tenant: str, room: str, livekit_name: str, request: StartEgressRequest
) -> tuple[lk.RoomCompositeEgressRequest | lk.TrackEgressRequest, list[str]]:
    """The LiveKit egress request and the outputs it writes (``{time}`` is LiveKit's own
    placeholder, filled when the egress starts)."""
    stem = f"{_folder(tenant, room)}/{request.filename or '{time}'}"
    if request.kind == "track":
        if not request.track_sid:
            raise RequestError("a track egress needs trackSid", "track_sid_required")
        if request.output not in ("mp4", "ogg"):
            raise RequestError(
                "a track egress writes a file; use output mp4 or ogg", "invalid_output"
            )
        return lk.TrackEgressRequest(
            room_name=livekit_name,
            track_id=request.track_sid,
            file=lk.DirectFileOutput(filepath=stem),
        ), ["file"]
    composite = lk.RoomCompositeEgressRequest(
        room_name=livekit_name,
        layout=request.layout or "",
        audio_only=request.audio_only or request.output == "ogg",
    )
    if request.output in ("mp4", "ogg"):
        file_type = lk.EncodedFileType.MP4 if request.output == "mp4" else lk.EncodedFileType.OGG
        composite.file_outputs.append(
            lk.EncodedFileOutput(file_type=file_type, filepath=f"{stem}.{request.output}")
        )
    elif request.output == "hls":
        composite.segment_outputs.append(
            lk.SegmentedFileOutput(
                protocol=lk.SegmentedFileProtocol.HLS_PROTOCOL,
                filename_prefix=stem,
                playlist_name=f"{stem}.m3u8",
                segment_duration=6,
            )
        )
    else:
        if not request.rtmp_urls:
            raise RequestError("an rtmp egress needs rtmpUrls", "rtmp_urls_required")
        composite.stream_outputs.append(
            lk.StreamOutput(protocol=lk.StreamProtocol.RTMP, urls=request.rtmp_urls)
        )
    return composite, [request.output]


def ingress_request(livekit_name: str, request: CreateIngressRequest) -> lk.CreateIngressRequest:
    if request.input_type == "url" and not request.url:
        raise RequestError("a url ingress needs url", "url_required")
    if request.input_type != "url" and request.url:
        raise RequestError("url is only for input type url", "url_not_allowed")
    input_type = {
        "rtmp": lk.IngressInput.RTMP_INPUT,
        "whip": lk.IngressInput.WHIP_INPUT,
        "url": lk.IngressInput.URL_INPUT,
    }[request.input_type]
    create = lk.CreateIngressRequest(
        input_type=input_type,
        room_name=livekit_name,
        name=request.name or "",
        participant_identity=request.participant_identity,
        participant_name=request.participant_name or request.participant_identity,
        url=request.url or "",
    )
    if request.enable_transcoding is not None:
        create.enable_transcoding = request.enable_transcoding
    return create
