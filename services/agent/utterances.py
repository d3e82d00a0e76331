"""A non-streaming STT (OpenAI's) cut into utterances by the session's own VAD.

livekit-agents' ``StreamAdapter`` makes such an STT streaming by running a Silero VAD stream of
its own over the audio the session's turn detection already runs through one: two VAD streams,
two inferences every 32 ms, per session. Here the session's VAD alone decides: the STT stream
says it can be flushed (``manual_flush``), livekit-agents flushes it when its VAD ends the
user's speech, and the audio since the user began speaking is transcribed then. The session
tells it when the user began (its ``user_state_changed`` event, from the same VAD).
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents import utils
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

# Audio kept from before the VAD says the user began speaking: Silero's own padding before an
# utterance (0.5 s) and how late it knows the start (50 ms of speech, its 32 ms windows, 100 ms
# frames), so the first syllable is not cut.
BEFORE_SPEECH_SECONDS = 0.8
# recognize() retries by itself (conn_options); the stream must not retry it again.
NO_STREAM_RETRY = APIConnectOptions(max_retry=0, timeout=DEFAULT_API_CONNECT_OPTIONS.timeout)


class UtteranceSTT(lk_stt.STT[Any]):
    """``stt`` as a streaming STT that transcribes each utterance when the session flushes it."""

    def __init__(self, stt: lk_stt.STT[Any]) -> None:
        super().__init__(
            capabilities=lk_stt.STTCapabilities(
                streaming=True,
                interim_results=False,
                manual_flush=True,
                keyterms=stt.capabilities.keyterms,
                chat_context=stt.capabilities.chat_context,
            )
        )
        self.wrapped = stt
        self.user_speaking = False
        self._streams: weakref.WeakSet[UtteranceStream] = weakref.WeakSet()
        stt.on("metrics_collected", self._forward_metrics)

    @property
    def model(self) -> str:
        return self.wrapped.model

    @property
    def provider(self) -> str:
        return self.wrapped.provider

    def on_user_state(self, event: Any) -> None:
        """The session's ``user_state_changed``: its VAD heard the user begin or stop."""
        self.user_speaking = event.new_state == "speaking"
        if self.user_speaking:
            for stream in list(self._streams):
                stream.speech_started()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> lk_stt.SpeechEvent:
        return await self.wrapped.recognize(
            buffer=buffer, language=language, conn_options=conn_options
        )

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> lk_stt.RecognizeStream:
        stream = UtteranceStream(self, language=language, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    # What livekit-agents hands the STT it runs, passed on to the real one (as StreamAdapter).
    def _update_session_keyterms(self, keyterms: list[str]) -> None:
        self.wrapped._update_session_keyterms(keyterms)

    def _push_conversation_item(self, item: Any) -> None:
        self.wrapped._push_conversation_item(item)

    def prewarm(self) -> None:
        self.wrapped.prewarm()

    def _forward_metrics(self, *args: Any, **kwargs: Any) -> None:
        self.emit("metrics_collected", *args, **kwargs)

    async def aclose(self) -> None:
        self.wrapped.off("metrics_collected", self._forward_metrics)


class UtteranceStream(lk_stt.RecognizeStream):
    """Keeps the audio pushed to it (before the user speaks, only the last
    ``BEFORE_SPEECH_SECONDS``); on flush, transcribes it unless it is all digital silence
    (livekit-agents gives the STT zeros while the user's audio must not count, e.g. during the
    agent's uninterruptible speech)."""

    def __init__(
        self, owner: UtteranceSTT, *, language: NotGivenOr[str], conn_options: APIConnectOptions
    ) -> None:
        super().__init__(stt=owner, conn_options=NO_STREAM_RETRY)
        self._owner = owner
        self._language = language
        self._recognize_options = conn_options
        self._speaking = owner.user_speaking
        self._frames: deque[rtc.AudioFrame] = deque()
        self._samples = 0  # in _frames (samples, not seconds: no rounding drift)
        self._utterances = utils.aio.Chan[list[rtc.AudioFrame]]()

    def speech_started(self) -> None:
        self._speaking = True
        self._trim()

    def _trim(self) -> None:
        frames = self._frames
        while frames:
            kept = int(BEFORE_SPEECH_SECONDS * frames[0].sample_rate)
            if self._samples - frames[0].samples_per_channel < kept:
                return
            self._samples -= frames.popleft().samples_per_channel

    # Frames are kept as they are pushed, on the caller's turn: no channel hop per frame.
    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._check_input_not_ended()
        self._check_not_closed()
        self._frames.append(frame)
        self._samples += frame.samples_per_channel
        if not self._speaking:
            self._trim()

    def flush(self) -> None:
        self._check_input_not_ended()
        self._check_not_closed()
        frames = list(self._frames)
        self._frames.clear()
        self._samples = 0
        self._speaking = self._owner.user_speaking
        if any(np.frombuffer(frame.data, dtype=np.int16).any() for frame in frames):
            self._utterances.send_nowait(frames)

    def end_input(self) -> None:
        self.flush()
        self._utterances.close()
        self._input_ch.close()

    async def aclose(self) -> None:
        self._utterances.close()
        self._owner._streams.discard(self)
        await super().aclose()

    async def _metrics_monitor_task(self, event_aiter: Any) -> None:
        async for _ in event_aiter:  # the real STT reports its own usage on each recognize()
            pass

    async def _run(self) -> None:
        async for frames in self._utterances:
            event = await self._owner.wrapped.recognize(
                buffer=utils.merge_frames(frames),
                language=self._language,
                conn_options=self._recognize_options,
            )
            if event.alternatives and event.alternatives[0].text:
                self._event_ch.send_nowait(
                    lk_stt.SpeechEvent(
                        type=lk_stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[event.alternatives[0]],
                    )
                )
