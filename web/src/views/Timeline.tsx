// A session's timeline: the first pages, then the live stream (a fetch stream: EventSource
// cannot send the Authorization header), reconnecting with its cursor when the stream ends.
import { useEffect, useState } from 'react';
import { api, ok, type SessionSummary, type TimelineEntry } from '../api/client';
import { hasKey, t, time } from '../i18n';

export function Timeline({ session }: { session: string }) {
  const [entries, setEntries] = useState<Map<string, TimelineEntry>>(new Map());
  const [summary, setSummary] = useState<SessionSummary | null>(null);
  const [personal, setPersonal] = useState(true);
  const [problem, setProblem] = useState('');

  useEffect(() => {
    const abort = new AbortController();
    setEntries(new Map());
    const add = (found: TimelineEntry[]) =>
      setEntries((seen) => {
        const next = new Map(seen);
        for (const entry of found) next.set(entry.key, entry); // a later seq completes an entry
        return next;
      });
    const run = async () => {
      let after = 0;
      for (;;) {
        const page = await ok(
          api.sessions.GET('/v1/sessions/{session_id}/timeline', {
            params: { path: { session_id: session }, query: { after, limit: 500 } },
            signal: abort.signal,
          }),
        );
        setSummary(page.session);
        setPersonal(page.personal);
        add(page.entries);
        after = page.cursor;
        if (!page.more) break;
      }
      while (!abort.signal.aborted) after = await follow(session, after, add, abort.signal);
    };
    run().catch((error: Error) => {
      if (!abort.signal.aborted) setProblem(error.message);
    });
    return () => abort.abort();
  }, [session]);

  const ordered = [...entries.values()].sort((a, b) => Date.parse(a.at) - Date.parse(b.at) || a.seq - b.seq);
  const reports = ordered.filter((entry) => entry.kind === 'usage').length;
  return (
    <section className="panel timeline" aria-labelledby="timeline-title" data-testid="timeline">
      <h2 id="timeline-title">
        {t('timeline.title')}
        {summary ? <span className="muted"> · {summary.room}</span> : null}
      </h2>
      {problem ? <p role="alert" className="error">{problem}</p> : null}
      {!personal ? <p className="muted">{t('timeline.personalHidden')}</p> : null}
      {summary && summary.dispatches.length ? <Cost dispatches={summary.dispatches.map((d) => d.id)} reports={reports} /> : null}
      <ol>
        {ordered.map((entry) => (
          <li key={entry.key} className={`entry ${entry.kind}`} data-kind={entry.kind} data-key={entry.key} data-trace-id={entry.traceId}>
            <time dateTime={entry.at}>{time(entry.at)}</time>
            <span className="kind">{label(entry.kind)}</span>
            <span className="what">{describe(entry)}</span>
            {entry.traceUrl ? (
              <a className="trace" href={entry.traceUrl} target="_blank" rel="noreferrer" aria-label={`${t('timeline.trace')} ${entry.traceId}`}>
                {t('timeline.trace')}
              </a>
            ) : entry.traceId ? (
              <code className="trace" title={t('timeline.trace')}>{entry.traceId.slice(0, 8)}</code>
            ) : null}
          </li>
        ))}
      </ol>
    </section>
  );
}

/** The session's agents' cost so far (billing prices it), again at each usage report. */
function Cost({ dispatches, reports }: { dispatches: string[]; reports: number }) {
  const [cost, setCost] = useState('');
  const key = dispatches.join(',');
  useEffect(() => {
    ok(api.billing.GET('/v1/usage/cost', { params: { query: { dispatch: dispatches } } }))
      .then((found) => setCost((found.totalCents / 100).toLocaleString(undefined, { style: 'currency', currency: found.currency })))
      .catch(() => setCost(''));
  }, [key, reports]);
  return cost ? <p data-testid="cost">{t('timeline.cost')}: <strong>{cost}</strong></p> : null;
}

/** Follows the stream from `after` until it ends; returns the last cursor. */
async function follow(
  session: string,
  after: number,
  add: (entries: TimelineEntry[]) => void,
  signal: AbortSignal,
): Promise<number> {
  const { response } = await api.sessions.GET('/v1/sessions/{session_id}/timeline/stream', {
    params: { path: { session_id: session }, query: { after } },
    parseAs: 'stream',
    signal,
  });
  if (!response.ok || !response.body) {
    await new Promise((resolve) => setTimeout(resolve, 3000));
    return after;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let cursor = after;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return cursor;
    buffer += value;
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    const entries = lines.filter((line) => line.trim()).map((line) => JSON.parse(line) as TimelineEntry & { heartbeat?: boolean });
    const real = entries.filter((entry) => !entry.heartbeat);
    for (const entry of real) cursor = Math.max(cursor, entry.seq);
    if (real.length) add(real);
  }
}

function label(kind: string): string {
  const key = `kind.${kind}`;
  return hasKey(key) ? t(key) : kind;
}

const str = (value: unknown) => (value === undefined || value === null ? '' : String(value));

function describe(entry: TimelineEntry): string {
  const d = entry.data;
  const p = entry.personal ?? {};
  switch (entry.kind) {
    case 'transcript':
      // A person by their (pseudonymous) identity: a copilot hears the doctor as well as the patient.
      return `${d.speaker === 'user' ? str(d.participantIdentity) || t('speaker.user') : t('speaker.agent')}: ${str(p.text) || '—'}`;
    case 'tool_call':
      return `${str(d.tool)} ${d.ok ? '✓' : '✗'} (${Number(d.durationSeconds ?? 0).toFixed(2)} s)`;
    case 'usage':
      return Object.entries((d.quantities as Record<string, number>) ?? {})
        .map(([meter, quantity]) => `${meter}: ${quantity}`)
        .join(', ');
    case 'agent_state':
      return [d.state, d.detail].filter(Boolean).join(' · ');
    case 'consent':
      return `${d.given ? t('consent.given') : t('consent.refused')}${d.givenBy || d.refusedBy ? ` (${str(d.givenBy || d.refusedBy)})` : ''}`;
    case 'hint':
      return `${str(d.kind)}${p.text ? `: ${str(p.text)}` : ''}`;
    case 'red_flag':
      return `${str(d.category)}${p.description ? `: ${str(p.description)}` : ''}`;
    case 'participant_joined':
    case 'participant_found':
    case 'participant_left':
    case 'participant_presumed_gone':
      return `${str(d.identity)}${d.kind && d.kind !== 'standard' ? ` (${str(d.kind)})` : ''}${p.name ? ` · ${str(p.name)}` : ''}${d.disconnectReason ? ` · ${str(d.disconnectReason)}` : ''}`;
    case 'dispatch_requested':
      return [d.role, d.llm || d.realtime, d.patientRef].filter(Boolean).join(' · ');
    case 'agent_joined':
      return [d.role, d.agentIdentity].filter(Boolean).join(' · ');
    case 'agent_left':
    case 'dispatch_failed':
    case 'session_failed':
      return [d.reason, d.detail].filter(Boolean).join(' · ');
    case 'anamnesis':
      return `${str(d.status)} · ${str(d.answers)}`;
    default:
      return Object.entries(d).map(([k, v]) => `${k}: ${str(v)}`).join(', ');
  }
}
