// The patient's call: /consulta/{room}#t=<LiveKit token>&w=<LiveKit URL>. Device check, join,
// hear (and see, with an avatar) the agent, captions, consent by voice or button, leave.
import { useEffect, useState } from 'react';
import { RoomEvent, Track, type RemoteParticipant, type Room } from 'livekit-client';
import { t } from '../i18n';
import { CHAT_TOPIC, AGENT_STATE_ATTRIBUTE, isPatientsAgent, newRoom, receiveCaptions, type Caption } from '../livekit';
import { CaptionList, LevelMeter, RoomAudio, VideoView, useCaptions, useRoomChanges } from '../call';
import { DeviceCheck, type Devices } from '../DeviceCheck';
import { fragment } from '../secrets';

type Stage = 'check' | 'joining' | 'call' | 'left' | 'ended';
// After this long without an agent, the patient is told the clinic will help.
const AGENT_LATE_MS = 30_000;

export function Patient({ room: roomName }: { room: string }) {
  const [secrets] = useState(() => fragment(`consulta:${roomName}`));
  const token = secrets.get('t') ?? '';
  const url = secrets.get('w') ?? `ws://${window.location.hostname}:7880`;
  const [stage, setStage] = useState<Stage>('check');
  const [room, setRoom] = useState<Room | null>(null);
  const [problem, setProblem] = useState('');
  const [captions, caption] = useCaptions();

  if (!token) return <Notice text={t('patient.noInvite')} />;

  const join = async (devices: Devices) => {
    setStage('joining');
    setProblem('');
    const joining = newRoom();
    // Captions are received from before connecting: the agent greets the patient as soon as
    // they are in the room, while the microphone and camera are still being opened.
    receiveCaptions(joining, caption);
    joining.on(RoomEvent.Disconnected, () => setStage((s) => (s === 'left' ? s : 'ended')));
    try {
      await joining.connect(url, token);
      await joining.localParticipant.setMicrophoneEnabled(devices.mic, devices.micId ? { deviceId: devices.micId } : undefined);
      await joining.localParticipant.setCameraEnabled(devices.camera, devices.cameraId ? { deviceId: devices.cameraId } : undefined);
      setRoom(joining);
      setStage('call');
    } catch (error) {
      await joining.disconnect();
      setProblem((error as Error).message);
      setStage('check');
    }
  };
  const leave = async () => {
    setStage('left');
    await room?.disconnect();
  };

  return (
    <main className="patient">
      <h1 className="room-title">{roomName}</h1>
      {problem ? <p role="alert" className="error">{t('common.error', { message: problem })}</p> : null}
      {stage === 'check' || stage === 'joining' ? <DeviceCheck onJoin={join} busy={stage === 'joining'} /> : null}
      {stage === 'call' && room ? <PatientCall room={room} captions={captions} onLeave={leave} /> : null}
      {stage === 'left' ? <Notice text={t('call.left')} /> : null}
      {stage === 'ended' ? <Notice text={t('call.disconnected')} /> : null}
    </main>
  );
}

function PatientCall({ room, captions, onLeave }: { room: Room; captions: Caption[]; onLeave: () => void }) {
  useRoomChanges(room);
  const [agentLeft, setAgentLeft] = useState(false);
  const [late, setLate] = useState(false);
  const [consent, setConsent] = useState<'pending' | 'sent'>('pending');

  useEffect(() => {
    const left = (participant: RemoteParticipant) => {
      if (isPatientsAgent(participant) && ![...room.remoteParticipants.values()].some(isPatientsAgent)) setAgentLeft(true);
    };
    const joined = (participant: RemoteParticipant) => {
      if (isPatientsAgent(participant)) setAgentLeft(false);
    };
    room.on(RoomEvent.ParticipantDisconnected, left);
    room.on(RoomEvent.ParticipantConnected, joined);
    const timer = window.setTimeout(() => setLate(true), AGENT_LATE_MS);
    return () => {
      window.clearTimeout(timer);
      room.off(RoomEvent.ParticipantDisconnected, left);
      room.off(RoomEvent.ParticipantConnected, joined);
    };
  }, [room]);

  // The copilot, the doctor's, is no agent of the patient's: it neither speaks nor stays for them.
  const agent = [...room.remoteParticipants.values()].find(isPatientsAgent);
  const agentAudio = agent?.getTrackPublication(Track.Source.Microphone)?.track?.mediaStreamTrack;
  const avatar = agent?.getTrackPublication(Track.Source.Camera)?.track;
  const state = agent?.attributes[AGENT_STATE_ATTRIBUTE] ?? '';
  const spoke = captions.some((c) => c.speaker === 'you' && c.final);
  const local = room.localParticipant;
  const mic = local.isMicrophoneEnabled;
  const camera = local.isCameraEnabled;
  const selfView = local.getTrackPublication(Track.Source.Camera)?.track;

  const answer = async (yes: boolean) => {
    // The same words the patient could have said, as the patient's own turn (docs/console.md).
    await local.sendText(yes ? t('consent.sayYes') : t('consent.sayNo'), { topic: CHAT_TOPIC });
    setConsent('sent');
  };

  return (
    <div className="call">
      <RoomAudio room={room} />
      <section className="panel agent" aria-labelledby="agent-title">
        <h2 id="agent-title">{t('agent.name')}</h2>
        {avatar ? <VideoView track={avatar} label={t('agent.name')} /> : <div className="avatar" aria-hidden="true">AI</div>}
        <p className="agent-state" data-testid="agent-state" data-state={state}>
          {agent ? (state ? t(`agent.state.${state}` as 'agent.state.listening') : '') : agentLeft ? '' : t('agent.waiting')}
        </p>
        <LevelMeter track={agentAudio} label={t('agent.level')} testId="agent-level" />
        {agentLeft ? <p role="status" className="warning" data-testid="agent-left">{t('agent.left')}</p> : null}
        {!agent && !agentLeft && late ? <p role="status" className="warning">{t('agent.late')}</p> : null}
      </section>
      {agent && consent === 'pending' && !spoke ? (
        <section className="panel consent" aria-labelledby="consent-title">
          <h2 id="consent-title">{t('consent.title')}</h2>
          <p>{t('consent.hint')}</p>
          <div className="buttons">
            <button type="button" className="primary" onClick={() => void answer(true)}>{t('consent.yes')}</button>
            <button type="button" onClick={() => void answer(false)}>{t('consent.no')}</button>
          </div>
        </section>
      ) : null}
      {consent === 'sent' ? <p role="status" className="muted">{t('consent.sent')}</p> : null}
      <CaptionList captions={captions} you={t('call.you')} />
      <section className="controls" aria-label={t('call.controls')}>
        {selfView ? <VideoView track={selfView} label={t('device.preview')} mirror /> : null}
        <button type="button" className="toggle" data-on={mic} onClick={() => void local.setMicrophoneEnabled(!mic)}>
          {mic ? t('call.micOn') : t('call.micOff')}
        </button>
        <button type="button" className="toggle" data-on={camera} onClick={() => void local.setCameraEnabled(!camera)}>
          {camera ? t('call.camOn') : t('call.camOff')}
        </button>
        <button type="button" className="danger" onClick={onLeave}>{t('call.leave')}</button>
      </section>
    </div>
  );
}

export function Notice({ text }: { text: string }) {
  return <p className="panel notice" role="status">{text}</p>;
}
