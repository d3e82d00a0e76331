// Before joining: see your camera, watch the microphone's level, choose devices, turn either
// off. Joining stops these previews; the call opens its own tracks.
import { useEffect, useState } from 'react';
import { t } from './i18n';
import { LevelMeter } from './call';

export interface Devices {
  mic: boolean;
  camera: boolean;
  micId?: string;
  cameraId?: string;
}

export function DeviceCheck({ onJoin, busy }: { onJoin: (devices: Devices) => void; busy: boolean }) {
  const [stream, setStream] = useState<MediaStream | null>(null);
  const [problem, setProblem] = useState('');
  const [mic, setMic] = useState(true);
  const [camera, setCamera] = useState(true);
  const [inputs, setInputs] = useState<MediaDeviceInfo[]>([]);
  const [micId, setMicId] = useState<string>();
  const [cameraId, setCameraId] = useState<string>();

  useEffect(() => {
    let opened: MediaStream | null = null;
    let cancelled = false;
    const open = async () => {
      try {
        opened = await navigator.mediaDevices.getUserMedia({
          audio: mic ? (micId ? { deviceId: micId } : true) : false,
          video: camera ? (cameraId ? { deviceId: cameraId } : { width: 640, height: 360 }) : false,
        });
      } catch (error) {
        if (!cancelled && (mic || camera)) setProblem(String((error as Error).message ?? error));
      }
      if (cancelled) {
        opened?.getTracks().forEach((track) => track.stop());
        return;
      }
      setStream(opened);
      setInputs(await navigator.mediaDevices.enumerateDevices());
    };
    if (mic || camera) void open();
    else setStream(null);
    return () => {
      cancelled = true;
      opened?.getTracks().forEach((track) => track.stop());
    };
  }, [mic, camera, micId, cameraId]);

  const video = stream?.getVideoTracks()[0];
  const audio = stream?.getAudioTracks()[0];
  const join = () => {
    stream?.getTracks().forEach((track) => track.stop());
    onJoin({ mic, camera, micId, cameraId });
  };
  const mics = inputs.filter((d) => d.kind === 'audioinput' && d.deviceId);
  const cameras = inputs.filter((d) => d.kind === 'videoinput' && d.deviceId);

  return (
    <section className="panel device-check" aria-labelledby="device-title">
      <h2 id="device-title">{t('device.title')}</h2>
      <p>{t('device.intro')}</p>
      {problem ? <p role="alert" className="error">{t('device.blocked', { message: problem })}</p> : null}
      <div className="preview">
        {video ? <PreviewVideo key={video.id} track={video} /> : <div className="video placeholder" aria-hidden="true" />}
      </div>
      <div className="device-row">
        <button type="button" className="toggle" aria-pressed={mic} onClick={() => setMic(!mic)}>
          {t('device.mic')}: {mic ? t('device.on') : t('device.off')}
        </button>
        {mics.length > 1 ? (
          <select aria-label={t('device.mic')} value={micId} onChange={(e) => setMicId(e.target.value)}>
            {mics.map((d) => <option key={d.deviceId} value={d.deviceId}>{d.label || d.deviceId}</option>)}
          </select>
        ) : null}
        <LevelMeter track={mic ? audio : undefined} label={t('device.level')} testId="mic-level" />
      </div>
      <div className="device-row">
        <button type="button" className="toggle" aria-pressed={camera} onClick={() => setCamera(!camera)}>
          {t('device.camera')}: {camera ? t('device.on') : t('device.off')}
        </button>
        {cameras.length > 1 ? (
          <select aria-label={t('device.camera')} value={cameraId} onChange={(e) => setCameraId(e.target.value)}>
            {cameras.map((d) => <option key={d.deviceId} value={d.deviceId}>{d.label || d.deviceId}</option>)}
          </select>
        ) : null}
      </div>
      <button type="button" className="primary" onClick={join} disabled={busy}>
        {busy ? t('device.joining') : t('device.join')}
      </button>
    </section>
  );
}

function PreviewVideo({ track }: { track: MediaStreamTrack }) {
  return (
    <video
      className="video mirror"
      aria-label={t('device.preview')}
      muted
      playsInline
      autoPlay
      ref={(element) => {
        if (element && element.srcObject === null) element.srcObject = new MediaStream([track]);
      }}
    />
  );
}
