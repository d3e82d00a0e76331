// Usage per meter this month, the invoices, and an audit by replay with its result.
import { useEffect, useState } from 'react';
import { api, ok } from '../api/client';
import { t } from '../i18n';

type Usage = Awaited<ReturnType<typeof loadUsage>>;
type Invoices = Awaited<ReturnType<typeof loadInvoices>>;

const loadUsage = () => ok(api.billing.GET('/v1/usage', { params: { query: { group_by: 'meter' } } }));
const loadInvoices = () => ok(api.billing.GET('/v1/invoices'));

function money(cents: number, currency = 'BRL'): string {
  return (cents / 100).toLocaleString(undefined, { style: 'currency', currency });
}

export function Billing() {
  const [usage, setUsage] = useState<Usage | null>(null);
  const [invoices, setInvoices] = useState<Invoices | null>(null);
  const [problem, setProblem] = useState('');
  useEffect(() => {
    loadUsage().then(setUsage).catch((e: Error) => setProblem(e.message));
    loadInvoices().then(setInvoices).catch((e: Error) => setProblem(e.message));
  }, []);
  return (
    <div className="billing">
      {problem ? <p role="alert" className="error">{problem}</p> : null}
      <section className="panel" aria-labelledby="usage-title">
        <h2 id="usage-title">{t('billing.usage')}</h2>
        <table data-testid="usage">
          <thead>
            <tr><th scope="col">{t('billing.meter')}</th><th scope="col">{t('billing.quantity')}</th><th scope="col">{t('billing.unit')}</th></tr>
          </thead>
          <tbody>
            {(usage?.rows ?? []).map((row) => (
              <tr key={`${row.group}-${row.meter}`}><td>{row.meter}</td><td>{row.quantity.toLocaleString()}</td><td>{row.unit}</td></tr>
            ))}
          </tbody>
        </table>
      </section>
      <section className="panel" aria-labelledby="invoices-title">
        <h2 id="invoices-title">{t('billing.invoices')}</h2>
        <table data-testid="invoices">
          <thead>
            <tr><th scope="col">{t('billing.month')}</th><th scope="col">{t('billing.status')}</th><th scope="col">{t('billing.total')}</th></tr>
          </thead>
          <tbody>
            {(invoices?.invoices ?? []).map((invoice) => (
              <tr key={invoice.id}><td>{invoice.month}</td><td>{invoice.status}</td><td>{money(invoice.totalCents, invoice.currency)}</td></tr>
            ))}
          </tbody>
        </table>
      </section>
      <Audit />
    </div>
  );
}

function Audit() {
  const today = new Date().toISOString().slice(0, 10);
  const [from, setFrom] = useState(today.slice(0, 8) + '01');
  const [to, setTo] = useState(today);
  const [result, setResult] = useState('');
  const [problem, setProblem] = useState('');
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    setProblem('');
    setResult('');
    try {
      const report = await ok(
        api.billing.POST('/v1/audits', { body: { from, to }, headers: { 'Idempotency-Key': crypto.randomUUID() } }),
      );
      setResult(
        report.matches
          ? t('billing.matches', { cents: money(report.replayedCents, report.currency) })
          : t('billing.differs', { meters: report.meters.filter((m) => m.centsDifference !== 0 || m.quantityDifference !== 0).map((m) => m.meter).join(', ') }),
      );
    } catch (error) {
      setProblem((error as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="panel form" aria-labelledby="audit-title">
      <h2 id="audit-title">{t('billing.audit')}</h2>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void run();
        }}
      >
        <label htmlFor="audit-from">{t('billing.from')}</label>
        <input id="audit-from" type="date" value={from} onChange={(e) => setFrom(e.target.value)} required />
        <label htmlFor="audit-to">{t('billing.to')}</label>
        <input id="audit-to" type="date" value={to} onChange={(e) => setTo(e.target.value)} required />
        <button type="submit" className="primary" disabled={busy}>{t('billing.run')}</button>
      </form>
      {problem ? <p role="alert" className="error">{problem}</p> : null}
      {result ? <p role="status" data-testid="audit-result">{result}</p> : null}
    </section>
  );
}
