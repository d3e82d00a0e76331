// What the views share of LiveKit: joining, who is an agent, the copilot's hints under the
// receiver rule (docs/agents-roles.md, "For frontends"), captions from the transcription text
// streams, and audio levels measured with WebAudio.
import {
  ParticipantKind,
  Room,
  RoomEvent,
  type RemoteParticipant,
  type TextStreamReader,
} from 'livekit-client';

export const HINT_TOPIC = 'mediai.copilot.hints';
export const TRANSCRIPTION_TOPIC = 'lk.transcription';
// livekit-agents takes text on this topic from the participant it talks with as that person's
// words: the consent buttons send the answer here (docs/console.md).
export const CHAT_TOPIC = 'lk.chat';
export const ROLE_ATTRIBUTE = 'mediai.role';
export const AGENT_STATE_ATTRIBUTE = 'lk.agent.state';

export function isAgent(participant: RemoteParticipant): boolean {
  return participant.kind === ParticipantKind.AGENT;
}

export function agentRole(participant: RemoteParticipant): string {
  return participant.attributes[ROLE_ATTRIBUTE] ?? '';
}

/** An agent that talks with the patient: any agent but the copilot, which is in the room for
 * the doctor only and never speaks. */
export function isPatientsAgent(participant: RemoteParticipant): boolean {
  return isAgent(participant) && agentRole(participant) !== 'copilot';
}

/** The participant with this identity, waiting up to `ms` for it to join (data and the news of
 * who joined travel apart); undefined if it does not. */
export function participantNamed(
  room: Room,
  identity: string,
  ms: number,
): Promise<RemoteParticipant | undefined> {
  const known = room.remoteParticipants.get(identity);
  if (known) return Promise.resolve(known);
  return new Promise((resolve) => {
    const done = (participant: RemoteParticipant | undefined) => {
      clearTimeout(timer);
      room.off(RoomEvent.ParticipantConnected, joined);
      resolve(participant);
    };
    const joined = (participant: RemoteParticipant) => {
      if (participant.identity === identity) done(participant);
    };
    const timer = setTimeout(() => done(undefined), ms);
    room.on(RoomEvent.ParticipantConnected, joined);
  });
}

export interface Hint {
  id: string;
  kind: string;
  text: string;
  at: number;
}

/** Calls `show` for each hint the copilot sends, and `refuse` for anything else on the topic:
 * a stream is a hint only when its sender is kind agent with `mediai.role` = copilot. */
export function receiveHints(
  room: Room,
  show: (hint: Hint) => void,
  refuse: (identity: string) => void,
): void {
  room.registerTextStreamHandler(HINT_TOPIC, async (reader: TextStreamReader, { identity }) => {
    const text = await reader.readAll();
    const sender = await participantNamed(room, identity, 5000);
    if (!sender || sender.kind !== ParticipantKind.AGENT || agentRole(sender) !== 'copilot') {
      refuse(identity);
      return;
    }
    const attributes = reader.info.attributes ?? {};
    show({
      id: attributes['mediai.hint.id'] ?? reader.info.id,
      kind: attributes['mediai.hint.kind'] ?? 'note',
      text,
      at: Date.now(),
    });
  });
}

export interface Caption {
  id: string;
  speaker: 'agent' | 'you' | 'other';
  identity: string;
  text: string;
  final: boolean;
  at: number;
}

/** Captions as the agents send them (LiveKit's transcription text streams: one stream per
 * segment, growing as it is said), both what the agent says and what it heard. */
export function receiveCaptions(room: Room, update: (caption: Caption) => void): void {
  room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, async (reader, { identity }) => {
    const attributes = reader.info.attributes ?? {};
    const id = attributes['lk.segment_id'] ?? reader.info.id;
    const track = attributes['lk.transcribed_track_id'] ?? '';
    const mine = [...room.localParticipant.trackPublications.values()].some(
      (publication) => publication.trackSid === track,
    );
    const sender = room.remoteParticipants.get(identity);
    const transcribedSender = sender && [...sender.trackPublications.values()].some((p) => p.trackSid === track);
    const speaker: Caption['speaker'] = mine ? 'you' : transcribedSender || !track ? 'agent' : 'other';
    const at = Date.now();
    let text = '';
    for await (const chunk of reader) {
      text += chunk;
      update({ id, speaker, identity, text, final: false, at });
    }
    update({ id, speaker, identity, text, final: true, at });
  });
}

/** The loudness (0..1, the peak of the last ~50 ms) of an audio track, measured with WebAudio,
 * reported about 20 times a second; returns a function that stops measuring. */
export function measureLevel(track: MediaStreamTrack, report: (level: number) => void): () => void {
  const context = new AudioContext();
  const source = context.createMediaStreamSource(new MediaStream([track]));
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  void context.resume();
  const timer = window.setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
    report(peak);
  }, 50);
  return () => {
    window.clearInterval(timer);
    source.disconnect();
    void context.close();
  };
}

/** A room as the console joins it. A muted microphone is released (the browser's recording
 * light goes off) and opened again when unmuted. */
export function newRoom(): Room {
  return new Room({ adaptiveStream: true, dynacast: true, publishDefaults: { stopMicTrackOnMute: true } });
}
