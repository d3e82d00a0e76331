// The doctor's call: /medico/{room}#t=<LiveKit token>&w=<LiveKit URL>&v=<view token>&c=<dispatch>.
// The call, the copilot's hints (only from the copilot, docs/agents-roles.md), red flags as a
// banner, the consultation's anamnesis with each answer linked to what the patient said, and a
// button that dispatches the copilot (the view token allows exactly that).
import { useEffect, useState } from 'react';
import { RoomEvent, Track, type Room } from 'livekit-client';
import { ApiError, api, ok, setCredential } from '../api/client';
import { t } from '../i18n';
import { AGENT_STATE_ATTRIBUTE, agentRole, isAgent, newRoom, receiveHints, type Hint } from '../livekit';
import { RoomAudio, VideoView, useRoomChanges } from '../call';
import { DeviceCheck, type Devices } from '../DeviceCheck';
import { fragment } from '../secrets';
import { Anamnesis } from './Anamnesis';
import { DISPATCH_DEFAULTS } from './NewConsultation';
import { Notice } from './Patient';

export function Doctor({ room: roomName }: { room: string }) {
  const [secrets] = useState(() => fragment(`medico:${roomName}`));
  const token = secrets.get('t') ?? '';
  const url = secrets.get('w') ?? `ws://${window.location.hostname}:7880`;
  const view = secrets.get('v') ?? '';
  const consultation = secrets.get('c') ?? '';
  // The models the clinic chose for this consultation, for the copilot too.
  const models: Record<string, string> = Object.fromEntries(['stt', 'llm', 'tts'].flatMap((k) => (secrets.get(k) ? [[k, secrets.get(k) ?? '']] : [])));
  const [room, setRoom] = useState<Room | null>(null);
  const [busy, setBusy] = useState(false);
  const [ended, setEnded] = useState(false);
  const [problem, setProblem] = useState('');
  setCredential(view);

  if (!token || !view) return <Notice text={t('doctor.noInvite')} />;

  const join = async (devices: Devices) => {
    setBusy(true);
    const joining = newRoom();
    joining.on(RoomEvent.Disconnected, () => setEnded(true));
    try {
      await joining.connect(url, token);
      await joining.localParticipant.setMicrophoneEnabled(devices.mic, devices.micId ? { deviceId: devices.micId } : undefined);
      await joining.localParticipant.setCameraEnabled(devices.camera, devices.cameraId ? { deviceId: devices.cameraId } : undefined);
      setRoom(joining);
    } catch (error) {
      setProblem((error as Error).message);
      await joining.disconnect();
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="doctor">
      <h1 className="room-title">{t('doctor.title')}: {roomName}</h1>
      {problem ? <p role="alert" className="error">{t('common.error', { message: problem })}</p> : null}
      <div className="doctor-layout">
        <div className="doctor-main">
          {ended ? <Notice text={t('call.disconnected')} /> : room ? <DoctorCall room={room} roomName={roomName} models={models} /> : <DeviceCheck onJoin={join} busy={busy} />}
        </div>
        <aside className="doctor-side">
          {consultation ? <Anamnesis consultation={consultation} /> : null}
        </aside>
      </div>
    </main>
  );
}

function DoctorCall({ room, roomName, models }: { room: Room; roomName: string; models: Record<string, string> }) {
  useRoomChanges(room);
  const [hints, setHints] = useState<Hint[]>([]);
  const [refused, setRefused] = useState(0);
  const [called, setCalled] = useState('');
  const [problem, setProblem] = useState('');

  useEffect(() => {
    receiveHints(
      room,
      (hint) => setHints((seen) => (seen.some((h) => h.id === hint.id) ? seen : [...seen, hint])),
      () => setRefused((n) => n + 1),
    );
    return () => room.unregisterTextStreamHandler('mediai.copilot.hints');
  }, [room]);

  const people = [...room.remoteParticipants.values()].filter((p) => !isAgent(p));
  const copilot = [...room.remoteParticipants.values()].find((p) => isAgent(p) && agentRole(p) === 'copilot');
  const copilotHere = Boolean(copilot);
  // The copilot's session state (livekit-agents): it hears the room once it is 'listening'.
  const copilotState = copilot?.attributes[AGENT_STATE_ATTRIBUTE] ?? '';
  const redFlags = hints.filter((h) => h.kind === 'red_flag');
  const local = room.localParticipant;
  const mic = local.isMicrophoneEnabled;

  const callCopilot = async () => {
    setProblem('');
    try {
      const dispatch = await ok(api.agents.POST('/v1/agents', { body: { ...DISPATCH_DEFAULTS, room: roomName, role: 'copilot', ...models } }));
      setCalled(dispatch.id);
    } catch (error) {
      setProblem(error instanceof ApiError ? error.message : String(error));
    }
  };

  return (
    <div className="call">
      <RoomAudio room={room} />
      {redFlags.length ? (
        <div className="red-flag" role="alert" data-testid="red-flag">
          <strong>{t('doctor.redFlag')}:</strong> {redFlags[redFlags.length - 1].text}
        </div>
      ) : null}
      <section className="panel people" aria-label={t('doctor.title')}>
        {people.map((person) => {
          const video = person.getTrackPublication(Track.Source.Camera)?.track;
          return (
            <figure key={person.identity} className="tile">
              {video ? <VideoView track={video} label={person.identity} /> : <div className="video placeholder" aria-hidden="true" />}
              <figcaption>{person.name || person.identity}</figcaption>
            </figure>
          );
        })}
      </section>
      <section className="panel hints" aria-labelledby="hints-title" data-testid="hints" data-refused={refused} data-copilot-state={copilotState}>
        <h2 id="hints-title">{t('doctor.hints')}</h2>
        {copilotHere ? (
          <p className="muted">{t('doctor.copilotHere')}</p>
        ) : (
          <button type="button" className="primary" onClick={() => void callCopilot()} disabled={Boolean(called)}>
            {t('doctor.callCopilot')}
          </button>
        )}
        {called && !copilotHere ? <p role="status">{t('doctor.copilotCalled')}</p> : null}
        {problem ? <p role="alert" className="error">{problem}</p> : null}
        {hints.length === 0 ? <p className="muted">{t('doctor.hintsEmpty')}</p> : null}
        <ul aria-live="polite">
          {hints.map((hint) => (
            <li key={hint.id} className={`hint ${hint.kind}`} data-kind={hint.kind}>
              <span className="badge">{t(`hint.${hint.kind}` as 'hint.note')}</span> {hint.text}
            </li>
          ))}
        </ul>
      </section>
      <section className="controls" aria-label={t('call.controls')}>
        <button type="button" className="toggle" data-on={mic} onClick={() => void local.setMicrophoneEnabled(!mic)}>
          {mic ? t('call.micOn') : t('call.micOff')}
        </button>
        <button type="button" className="danger" onClick={() => void room.disconnect()}>{t('call.leave')}</button>
      </section>
    </div>
  );
}
