// A consultation in one click (the three steps of the README): tokens for a patient and a
// doctor, the intake agent dispatched, and a doctor's view token bound to that consultation;
// then the two links. And a plain agent dispatch into any room.
import { useState } from 'react';
import { api, ok } from '../api/client';
import type { components } from '../api/schema/dispatcher';

// The roles the API takes (its document's enum).
type Role = components['schemas']['DispatchAgentRequest']['role'];
import { t } from '../i18n';

const ROLES = ['intake', 'copilot', 'receptionist', 'generic'] as const;
// The API's defaults, sent explicitly: the documents list defaulted fields as required for now.
export const DISPATCH_DEFAULTS = { instructions: '', instructionsMode: 'append', language: 'pt-BR', patientIsMinor: false } as const;

function suffix(): string {
  return Math.random().toString(36).slice(2, 8);
}

interface Models {
  stt: string;
  llm: string;
  tts: string;
}

function ModelFields({ models, set }: { models: Models; set: (m: Models) => void }) {
  return (
    <fieldset>
      <legend>{t('dispatch.models')}</legend>
      {(['stt', 'llm', 'tts'] as const).map((kind) => (
        <label key={kind} className="inline">
          {kind.toUpperCase()}
          <input name={kind} value={models[kind]} placeholder="openai/gpt-4o-mini" onChange={(e) => set({ ...models, [kind]: e.target.value })} />
        </label>
      ))}
    </fieldset>
  );
}

function chosen(models: Models): Partial<Models> {
  return Object.fromEntries(Object.entries(models).filter(([, v]) => v.trim())) as Partial<Models>;
}

interface Links {
  patient: string;
  doctor: string;
  dispatch: string;
}

export function NewConsultation() {
  const [room, setRoom] = useState(() => `consulta-${suffix()}`);
  const [patientRef, setPatientRef] = useState(() => `pac-${suffix()}`);
  const [instructions, setInstructions] = useState('');
  const [models, setModels] = useState<Models>({ stt: '', llm: '', tts: '' });
  const [links, setLinks] = useState<Links | null>(null);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState('');

  const create = async () => {
    setBusy(true);
    setProblem('');
    try {
      const patient = `paciente-${suffix()}`;
      const patientToken = await ok(api.token.POST('/v1/tokens', { body: { room, identity: patient, role: 'patient', patientRef, ttl: '2h', canPublish: true, canSubscribe: true } }));
      const doctorToken = await ok(api.token.POST('/v1/tokens', { body: { room, identity: `medico-${suffix()}`, role: 'doctor', ttl: '2h', canPublish: true, canSubscribe: true } }));
      const dispatch = await ok(
        api.agents.POST('/v1/agents', {
          body: { ...DISPATCH_DEFAULTS, room, role: 'intake', participant: patient, patientRef, instructions, ...chosen(models) },
          headers: { 'Idempotency-Key': crypto.randomUUID() },
        }),
      );
      const view = await ok(api.token.POST('/v1/view-tokens', { body: { view: 'doctor', dispatchId: dispatch.id, room, ttl: '1h', personal: true } }));
      const origin = window.location.origin;
      const fragment = (values: Record<string, string>) => new URLSearchParams(values).toString();
      setLinks({
        patient: `${origin}/consulta/${room}#${fragment({ t: patientToken.token, w: patientToken.wsUrl })}`,
        doctor: `${origin}/medico/${room}#${fragment({ t: doctorToken.token, w: doctorToken.wsUrl, v: view.token, c: dispatch.id, ...chosen(models) })}`,
        dispatch: dispatch.id,
      });
    } catch (error) {
      setProblem((error as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel form" aria-labelledby="new-title">
      <h2 id="new-title">{t('clinic.tab.new')}</h2>
      <p>{t('new.intro')}</p>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void create();
        }}
      >
        <label htmlFor="new-room">{t('new.room')}</label>
        <input id="new-room" value={room} onChange={(e) => setRoom(e.target.value)} required />
        <label htmlFor="new-patient">{t('new.patientRef')}</label>
        <input id="new-patient" value={patientRef} onChange={(e) => setPatientRef(e.target.value)} required />
        <label htmlFor="new-instructions">{t('new.instructions')}</label>
        <textarea id="new-instructions" value={instructions} onChange={(e) => setInstructions(e.target.value)} rows={3} />
        <ModelFields models={models} set={setModels} />
        {problem ? <p role="alert" className="error">{problem}</p> : null}
        <button type="submit" className="primary" disabled={busy}>{t('new.create')}</button>
      </form>
      {links ? (
        <div className="links" data-testid="links" data-dispatch={links.dispatch}>
          <p>{t('new.consultation')}: <code>{links.dispatch}</code></p>
          <LinkRow label={t('new.patientLink')} href={links.patient} name="patient" />
          <LinkRow label={t('new.doctorLink')} href={links.doctor} name="doctor" />
        </div>
      ) : null}
    </section>
  );
}

function LinkRow({ label, href, name }: { label: string; href: string; name: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <p className="link-row">
      <a href={href} target="_blank" rel="noreferrer" data-link={name}>{label}</a>{' '}
      <button
        type="button"
        onClick={() => {
          void navigator.clipboard?.writeText(href).then(() => setCopied(true));
        }}
      >
        {copied ? t('common.copied') : t('common.copy')}
      </button>
    </p>
  );
}

export function Dispatch() {
  const [room, setRoom] = useState('');
  const [role, setRole] = useState<Role>('intake');
  const [instructions, setInstructions] = useState('');
  const [models, setModels] = useState<Models>({ stt: '', llm: '', tts: '' });
  const [result, setResult] = useState('');
  const [problem, setProblem] = useState('');

  const send = async () => {
    setProblem('');
    setResult('');
    try {
      const made = await ok(
        api.agents.POST('/v1/agents', {
          body: { ...DISPATCH_DEFAULTS, room, role, instructions, ...chosen(models) },
          headers: { 'Idempotency-Key': crypto.randomUUID() },
        }),
      );
      setResult(t('dispatch.sent', { id: made.id, state: made.state }));
    } catch (error) {
      setProblem((error as Error).message);
    }
  };

  return (
    <section className="panel form" aria-labelledby="dispatch-title">
      <h2 id="dispatch-title">{t('clinic.tab.dispatch')}</h2>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void send();
        }}
      >
        <label htmlFor="dispatch-room">{t('dispatch.room')}</label>
        <input id="dispatch-room" value={room} onChange={(e) => setRoom(e.target.value)} required />
        <label htmlFor="dispatch-role">{t('dispatch.role')}</label>
        <select id="dispatch-role" value={role} onChange={(e) => setRole(e.target.value as Role)}>
          {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
        </select>
        <label htmlFor="dispatch-instructions">{t('dispatch.instructions')}</label>
        <textarea id="dispatch-instructions" value={instructions} onChange={(e) => setInstructions(e.target.value)} rows={3} />
        <ModelFields models={models} set={setModels} />
        {problem ? <p role="alert" className="error">{problem}</p> : null}
        {result ? <p role="status">{result}</p> : null}
        <button type="submit" className="primary">{t('dispatch.send')}</button>
      </form>
    </section>
  );
}
