// The consultation's anamnesis (FHIR QuestionnaireResponse) for reading, each answer linked to
// the patient's words it came from (the consultation's timeline, personal parts included for a
// doctor's view). Shown once the intake has recorded it.
import { useEffect, useState } from 'react';
import { ApiError, api, ok } from '../api/client';
import { t } from '../i18n';

interface Item {
  linkId: string;
  text?: string;
  answer?: Record<string, unknown>[];
  item?: Item[];
}

interface Record_ {
  summaryPtBr: string;
  questionnaireResponse: { item?: Item[]; status?: string };
  transcriptRefs: { linkId: string; segmentIds: string[] }[];
}

const POLL_MS = 3000;

export function Anamnesis({ consultation }: { consultation: string }) {
  const [record, setRecord] = useState<Record_ | null>(null);
  const [said, setSaid] = useState<Map<string, string>>(new Map());
  const [problem, setProblem] = useState('');

  useEffect(() => {
    let stop = false;
    let timer = 0;
    const poll = async () => {
      try {
        const found = await ok(
          api.scheduling.GET('/v1/consultations/{dispatch_id}/anamnesis', { params: { path: { dispatch_id: consultation } } }),
        );
        if (stop) return;
        setRecord(found as unknown as Record_);
        setSaid(await patientWords(consultation));
        return;
      } catch (error) {
        if (!(error instanceof ApiError && error.code === 'anamnesis_not_found')) setProblem(String((error as Error).message));
      }
      if (!stop) timer = window.setTimeout(() => void poll(), POLL_MS);
    };
    void poll();
    return () => {
      stop = true;
      window.clearTimeout(timer);
    };
  }, [consultation]);

  return (
    <section className="panel anamnesis" aria-labelledby="anamnesis-title" data-testid="anamnesis">
      <h2 id="anamnesis-title">{t('doctor.anamnesis')}</h2>
      {problem ? <p role="alert" className="error">{problem}</p> : null}
      {!record ? <p className="muted">{t('doctor.anamnesisWaiting')}</p> : <Record record={record} said={said} />}
    </section>
  );
}

function Record({ record, said }: { record: Record_; said: Map<string, string> }) {
  const refs = new Map(record.transcriptRefs.map((r) => [r.linkId, r.segmentIds]));
  const groups = record.questionnaireResponse.item ?? [];
  return (
    <div>
      <h3>{t('doctor.summary')}</h3>
      <p className="summary">{record.summaryPtBr}</p>
      {groups.map((group) => (
        <section key={group.linkId}>
          <h3>{group.text ?? group.linkId}</h3>
          <dl>
            {(group.item ?? []).map((item) => (
              <div key={item.linkId} className="answer" data-link-id={item.linkId}>
                <dt>{item.text ?? item.linkId}</dt>
                <dd>
                  {(item.answer ?? []).map(display).join(', ')}
                  {(refs.get(item.linkId) ?? []).map((segment) =>
                    said.get(segment) ? (
                      <blockquote key={segment} cite={`#${segment}`} aria-label={t('doctor.said')}>
                        “{said.get(segment)}”
                      </blockquote>
                    ) : null,
                  )}
                </dd>
              </div>
            ))}
          </dl>
        </section>
      ))}
    </div>
  );
}

function display(answer: Record<string, unknown>): string {
  const [key, value] = Object.entries(answer)[0] ?? ['', ''];
  if (key === 'valueBoolean') return value ? 'sim' : 'não';
  if (key === 'valueCoding') {
    const coding = value as { display?: string; code?: string };
    return coding.display ?? coding.code ?? '';
  }
  return String(value);
}

/** What the patient said in the consultation, by transcript segment id. */
async function patientWords(consultation: string): Promise<Map<string, string>> {
  const words = new Map<string, string>();
  let after = 0;
  for (;;) {
    const page = await ok(
      api.sessions.GET('/v1/sessions/{session_id}/timeline', { params: { path: { session_id: consultation }, query: { after, limit: 500 } } }),
    );
    for (const entry of page.entries) {
      const text = entry.personal?.text;
      if (entry.kind === 'transcript' && typeof text === 'string') words.set(String(entry.data.segmentId), text);
    }
    if (!page.more) return words;
    after = page.cursor;
  }
}
