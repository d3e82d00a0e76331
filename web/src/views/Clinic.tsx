// The clinic's view: sessions live and past with their timelines, a new consultation, an agent
// dispatched into a room, usage, invoices and audits. It holds a one-hour view token, never the
// API key: a key given in the address (#k=, as `make up` prints it) or typed in is exchanged at
// once and dropped.
import { useEffect, useState } from 'react';
import { api, ok, setCredential, type SessionSummary } from '../api/client';
import { dateTime, t } from '../i18n';
import { fragment, remember } from '../secrets';
import { Billing } from './Billing';
import { Dispatch, NewConsultation } from './NewConsultation';
import { Timeline } from './Timeline';

const TABS = ['sessions', 'new', 'dispatch', 'billing'] as const;
type Tab = (typeof TABS)[number];

export function Clinic() {
  const [access, setAccess] = useState(() => {
    const found = fragment('clinica');
    return { token: found.get('v') ?? '', expires: found.get('e') ?? '', key: found.get('k') ?? '' };
  });
  const [problem, setProblem] = useState('');
  const [tab, setTab] = useState<Tab>('sessions');

  const exchange = async (key: string) => {
    setProblem('');
    setCredential(key);
    try {
      const made = await ok(api.token.POST('/v1/view-tokens', { body: { view: 'clinic', personal: true, ttl: '1h' } }));
      remember('clinica', { v: made.token, e: made.expiresAt });
      setAccess({ token: made.token, expires: made.expiresAt, key: '' });
    } catch (error) {
      setProblem((error as Error).message);
      setAccess({ token: '', expires: '', key: '' });
    } finally {
      setCredential('');
    }
  };

  useEffect(() => {
    if (access.key) void exchange(access.key);
  }, []);

  if (access.token && Date.parse(access.expires) > Date.now()) setCredential(access.token);
  else if (!access.key) return <SignIn onKey={exchange} problem={problem} />;
  else return <p className="panel">{t('common.loading')}</p>;

  return (
    <main className="clinic">
      <header className="clinic-header">
        <h1>{t('clinic.title')}</h1>
        <p className="muted">{t('clinic.expires', { time: dateTime(access.expires) })}</p>
      </header>
      <nav role="tablist" aria-label={t('clinic.title')} className="tabs">
        {TABS.map((name) => (
          <button key={name} type="button" role="tab" id={`tab-${name}`} aria-selected={tab === name} aria-controls={`panel-${name}`} onClick={() => setTab(name)}>
            {t(`clinic.tab.${name}`)}
          </button>
        ))}
      </nav>
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === 'sessions' ? <Sessions /> : null}
        {tab === 'new' ? <NewConsultation /> : null}
        {tab === 'dispatch' ? <Dispatch /> : null}
        {tab === 'billing' ? <Billing /> : null}
      </div>
    </main>
  );
}

function SignIn({ onKey, problem }: { onKey: (key: string) => void; problem: string }) {
  const [key, setKey] = useState('');
  return (
    <main className="clinic">
      <h1>{t('clinic.title')}</h1>
      <form
        className="panel form"
        onSubmit={(event) => {
          event.preventDefault();
          onKey(key.trim());
          setKey('');
        }}
      >
        <label htmlFor="api-key">{t('clinic.key')}</label>
        <input id="api-key" type="password" autoComplete="off" value={key} onChange={(e) => setKey(e.target.value)} required />
        <p className="muted">{t('clinic.keyHelp')}</p>
        {problem ? <p role="alert" className="error">{problem}</p> : null}
        <button type="submit" className="primary">{t('clinic.enter')}</button>
      </form>
    </main>
  );
}

const REFRESH_MS = 4000;

function Sessions() {
  const [sessions, setSessions] = useState<SessionSummary[]>([]);
  const [chosen, setChosen] = useState('');
  const [problem, setProblem] = useState('');

  useEffect(() => {
    let stop = false;
    const load = async () => {
      try {
        const found = await ok(api.sessions.GET('/v1/sessions', { params: { query: { limit: 50 } } }));
        if (!stop) setSessions(found.sessions);
      } catch (error) {
        if (!stop) setProblem((error as Error).message);
      }
    };
    void load();
    const timer = window.setInterval(() => void load(), REFRESH_MS);
    return () => {
      stop = true;
      window.clearInterval(timer);
    };
  }, []);

  const live = sessions.filter((s) => s.live);
  const past = sessions.filter((s) => !s.live);
  const list = (items: SessionSummary[], title: string, id: string) => (
    <section aria-labelledby={id}>
      <h3 id={id}>{title}</h3>
      {items.length === 0 ? <p className="muted">{t('common.none')}</p> : null}
      <ul className="session-list">
        {items.map((s) => (
          <li key={s.id}>
            <button type="button" className={chosen === s.id ? 'session chosen' : 'session'} aria-current={chosen === s.id} data-session={s.id} data-room={s.room} onClick={() => setChosen(s.id)}>
              <strong>{s.room}</strong>
              <span className="muted"> {dateTime(s.startedAt)}</span>
              <span className="agents">
                {s.dispatches.map((d) => (
                  <span key={d.id} className={`state ${d.state}`}>{d.role} · {d.state}</span>
                ))}
              </span>
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
  return (
    <div className="sessions-layout">
      <div className="panel sessions">
        <h2>{t('clinic.tab.sessions')}</h2>
        {problem ? <p role="alert" className="error">{problem}</p> : null}
        {sessions.length === 0 ? <p className="muted">{t('sessions.empty')}</p> : null}
        {sessions.length ? list(live, t('sessions.live'), 'live-title') : null}
        {sessions.length ? list(past, t('sessions.past'), 'past-title') : null}
      </div>
      {chosen ? <Timeline session={chosen} /> : <p className="panel muted">{t('sessions.pick')}</p>}
    </div>
  );
}
