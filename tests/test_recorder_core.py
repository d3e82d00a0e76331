"""The recorder's rules and formats, without infrastructure: when consent lets a recording
start and what ends it; the sealed file; the mix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.recorder import core
from services.recorder.media import BLOCK, JITTER, Mixer
from services.recorder.sealed_file import CHUNK_BYTES, SealedWriter, key_id_of, read_sealed
from shared.crypto import DataKey, UnreadableError, new_secret
from shared.events.clinical import ConsentGiven, ConsentRefused

T0 = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
REQUEST = core.Request("EG_rec_1", "t1", "consulta-1", T0)


def given(at: datetime, *, recording: bool = True) -> ConsentGiven:
    return ConsentGiven(
        dispatch_id="d1",
        room="consulta-1",
        role="intake",
        recording=recording,
        wording="consent-pt-BR-2026-01",
        given_at=at,
        patient_ref="p-1",
    )


def refused(at: datetime, *, refused: str = "recording") -> ConsentRefused:
    return ConsentRefused(
        dispatch_id="d1",
        room="consulta-1",
        role="intake",
        refused=refused,
        wording="consent-pt-BR-2026-01",
        refused_at=at,
    )


def test_a_request_waits_for_consent_to_the_recording_given_after_it() -> None:
    state, actions = core.requested(core.RoomState(), REQUEST)
    assert actions == [core.Join(REQUEST)]  # present (the room shows as recorded), deaf
    # Consent to the AI alone, or given before the request, starts nothing.
    assert core.consent_given(state, given(T0 + timedelta(seconds=5), recording=False))[1] == []
    assert core.consent_given(state, given(T0 - timedelta(seconds=5)))[1] == []
    state, actions = core.consent_given(state, given(T0 + timedelta(seconds=5)))
    consent = core.Consent("d1", "p-1", T0 + timedelta(seconds=5))
    assert actions == [core.Start(REQUEST, consent)]
    assert (state.waiting, state.recording) == (None, "EG_rec_1")


def test_consent_that_overtakes_its_request_on_the_log_still_counts() -> None:
    """The agent publishes at once, the API through its outbox: consent may arrive first."""
    consent = core.Consent("d1", "p-1", T0 + timedelta(seconds=1))
    early, _ = core.consent_given(core.RoomState(), given(T0 + timedelta(seconds=1)))
    assert core.requested(early, REQUEST)[1] == [core.Start(REQUEST, consent)]
    # ... but consent from before the request (an earlier consultation) does not.
    old, _ = core.consent_given(core.RoomState(), given(T0 - timedelta(minutes=30)))
    assert core.requested(old, REQUEST)[1] == [core.Join(REQUEST)]
    # ... and a refusal that overtook it cancels it.
    refusal, _ = core.consent_refused(core.RoomState(), refused(T0 + timedelta(seconds=1)))
    assert core.requested(refusal, REQUEST)[1] == [core.Cancel(REQUEST, core.CONSENT_REFUSED)]


def test_consent_alone_records_nothing_and_a_second_request_is_refused() -> None:
    assert core.consent_given(core.RoomState(), given(T0))[1] == []
    state, _ = core.requested(core.RoomState(), REQUEST)
    second = core.Request("EG_rec_2", "t1", "consulta-1", T0)
    assert core.requested(state, second)[1] == [core.Cancel(second, "already_recording")]


def test_withdrawal_stops_the_recording_and_refusal_cancels_the_request() -> None:
    waiting, _ = core.requested(core.RoomState(), REQUEST)
    recording, _ = core.consent_given(waiting, given(T0 + timedelta(seconds=5)))
    later = T0 + timedelta(minutes=3)
    withdrawn, actions = core.consent_refused(recording, refused(later))
    assert actions == [core.Stop("EG_rec_1", core.CONSENT_WITHDRAWN)]
    assert withdrawn.recording is None
    assert core.consent_refused(waiting, refused(later))[1] == [
        core.Cancel(REQUEST, core.CONSENT_REFUSED)
    ]
    # A refusal of the AI alone, asked without the recording, leaves the recording alone.
    assert core.consent_refused(recording, refused(later, refused="ai_assistance"))[1] == []


def test_a_stop_request_ends_the_recording_or_the_waiting_request() -> None:
    waiting, _ = core.requested(core.RoomState(), REQUEST)
    recording, _ = core.consent_given(waiting, given(T0 + timedelta(seconds=5)))
    assert core.stop_requested(recording, "EG_rec_1")[1] == [core.Stop("EG_rec_1", core.STOPPED)]
    assert core.stop_requested(waiting, "EG_rec_1")[1] == [core.Cancel(REQUEST, core.STOPPED)]
    assert core.stop_requested(recording, "EG_other")[1] == []
    assert core.ended(recording, "EG_rec_1").recording is None
    assert core.ended(waiting, "EG_rec_1").waiting is None


def _key() -> DataKey:
    return DataKey("k1", "t1", "clinical", "p-1", new_secret())


def test_a_sealed_file_opens_only_whole_and_with_its_key(tmp_path: Path) -> None:
    key, plain = _key(), np.random.default_rng(1).bytes(CHUNK_BYTES * 2 + 123)
    writer = SealedWriter(tmp_path / "r.ogg.sealed", key, "EG_1")
    writer.write(plain[:1000])
    writer.write(plain[1000:])
    writer.close()
    sealed = (tmp_path / "r.ogg.sealed").read_bytes()
    assert plain[:64] not in sealed and key_id_of(tmp_path / "r.ogg.sealed") == "k1"
    assert read_sealed(tmp_path / "r.ogg.sealed", key, "EG_1") == plain
    with pytest.raises(UnreadableError):
        read_sealed(tmp_path / "r.ogg.sealed", _key(), "EG_1")  # another key
    with pytest.raises(UnreadableError):
        read_sealed(tmp_path / "r.ogg.sealed", key, "EG_2")  # another file's chunks
    (tmp_path / "cut.sealed").write_bytes(sealed[: len(sealed) * 2 // 3])
    with pytest.raises(UnreadableError):
        read_sealed(tmp_path / "cut.sealed", key, "EG_1")  # cut short


def test_the_mix_sums_voices_after_their_jitter_buffer_and_keeps_time() -> None:
    mixer = Mixer()
    mixer.push("a", np.full(JITTER, 1000, np.int16))
    mixer.push("b", np.full(JITTER // 2, 30000, np.int16))  # not enough buffered yet
    assert set(mixer.block().tolist()) == {1000}
    mixer.push("b", np.full(JITTER, 30000, np.int16))
    assert set(mixer.block().tolist()) == {31000}
    loud = Mixer()
    loud.push("a", np.full(JITTER, 30000, np.int16))
    loud.push("b", np.full(JITTER, 30000, np.int16))
    assert loud.block().max() == 32767  # clipped, not wrapped
    assert len(Mixer().block()) == BLOCK  # silence when nobody speaks
