// Pieces of a call the patient's and the doctor's views share.
import { useEffect, useReducer, useRef, useState } from 'react';
import { RoomEvent, Track, type RemoteTrack, type Room } from 'livekit-client';
import { t } from './i18n';
import { measureLevel, type Caption } from './livekit';

/** Re-renders on anything that changes who is in the room and what they publish. */
export function useRoomChanges(room: Room | null): number {
  const [version, bump] = useReducer((n: number) => n + 1, 0);
  useEffect(() => {
    if (!room) return;
    const events = [
      RoomEvent.ParticipantConnected,
      RoomEvent.ParticipantDisconnected,
      RoomEvent.ParticipantAttributesChanged,
      RoomEvent.TrackSubscribed,
      RoomEvent.TrackUnsubscribed,
      RoomEvent.TrackMuted,
      RoomEvent.TrackUnmuted,
      RoomEvent.LocalTrackPublished,
      RoomEvent.LocalTrackUnpublished,
      RoomEvent.ConnectionStateChanged,
    ] as const;
    for (const event of events) room.on(event, bump);
    return () => {
      for (const event of events) room.off(event, bump);
    };
  }, [room]);
  return version;
}

/** Plays every remote audio track (agents and people) in hidden <audio> elements. */
export function RoomAudio({ room }: { room: Room }) {
  const holder = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const attach = (track: RemoteTrack) => {
      if (track.kind === Track.Kind.Audio) holder.current?.appendChild(track.attach());
    };
    const detach = (track: RemoteTrack) => {
      track.detach().forEach((element) => element.remove());
    };
    for (const participant of room.remoteParticipants.values()) {
      for (const publication of participant.audioTrackPublications.values()) {
        if (publication.track) attach(publication.track);
      }
    }
    room.on(RoomEvent.TrackSubscribed, attach);
    room.on(RoomEvent.TrackUnsubscribed, detach);
    return () => {
      room.off(RoomEvent.TrackSubscribed, attach);
      room.off(RoomEvent.TrackUnsubscribed, detach);
    };
  }, [room]);
  return <div ref={holder} hidden />;
}

/** A video track in a <video> element. */
export function VideoView({ track, label, mirror }: { track: Track; label: string; mirror?: boolean }) {
  const element = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const video = element.current;
    if (!video) return;
    track.attach(video);
    return () => {
      track.detach(video);
    };
  }, [track]);
  return <video ref={element} className={mirror ? 'video mirror' : 'video'} aria-label={label} muted playsInline autoPlay />;
}

/** A level meter of an audio track; `data-peak` keeps the loudest level seen (tests read it). */
export function LevelMeter({ track, label, testId }: { track: MediaStreamTrack | undefined; label: string; testId?: string }) {
  const [level, setLevel] = useState(0);
  const [peak, setPeak] = useState(0);
  useEffect(() => {
    if (!track) return;
    return measureLevel(track, (value) => {
      setLevel(value);
      setPeak((seen) => Math.max(seen, value));
    });
  }, [track]);
  return (
    <meter
      className="level"
      min={0}
      max={1}
      value={Math.min(1, level * 2)}
      aria-label={label}
      data-testid={testId}
      data-peak={peak.toFixed(3)}
    />
  );
}

export function CaptionList({ captions, you }: { captions: Caption[]; you: string }) {
  const end = useRef<HTMLLIElement>(null);
  useEffect(() => {
    // Braces: scrollIntoView returns a promise in newer browsers, and an effect returns only
    // its clean-up.
    end.current?.scrollIntoView({ block: 'nearest' });
  }, [captions]);
  return (
    <section className="panel captions" aria-labelledby="captions-title">
      <h2 id="captions-title">{t('captions.title')}</h2>
      {captions.length === 0 ? <p className="muted">{t('captions.empty')}</p> : null}
      <ol aria-live="polite" data-testid="captions">
        {captions.map((caption) => (
          <li key={caption.id} className={`caption ${caption.speaker}`} data-speaker={caption.speaker} data-final={caption.final}>
            <span className="who">{caption.speaker === 'you' ? you : caption.speaker === 'agent' ? t('captions.agent') : caption.identity}</span>{' '}
            <span className="said">{caption.text}</span>
          </li>
        ))}
        <li ref={end} aria-hidden="true" className="end" />
      </ol>
    </section>
  );
}

/** Keeps captions by segment id, in the order their segments started. */
export function useCaptions(): [Caption[], (caption: Caption) => void] {
  const [byId, setById] = useState<Map<string, Caption>>(new Map());
  const update = (caption: Caption) =>
    setById((seen) => {
      const next = new Map(seen);
      const first = seen.get(caption.id);
      next.set(caption.id, first ? { ...caption, at: first.at } : caption);
      return next;
    });
  const ordered = [...byId.values()].filter((c) => c.text.trim()).sort((a, b) => a.at - b.at).slice(-60);
  return [ordered, update];
}
