// The MediAI console: three views routed by path (the gateway serves index.html for each).
//   /consulta/{room}   the patient's call          /medico/{room}   the doctor's call
//   /                  the clinic's sessions, timelines, dispatches, usage and audits
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { otherLanguageUrl, t } from './i18n';
import { Clinic } from './views/Clinic';
import { Doctor } from './views/Doctor';
import { Patient } from './views/Patient';
import './styles.css';

function route() {
  const [, first, room] = window.location.pathname.split('/').map(decodeURIComponent);
  if (first === 'consulta' && room) return <Patient room={room} />;
  if (first === 'medico' && room) return <Doctor room={room} />;
  return <Clinic />;
}

function App() {
  return (
    <>
      <header className="top">
        <span className="brand">{t('app.title')}</span>
        <a href={otherLanguageUrl()}>{t('lang.switch')}</a>
      </header>
      {route()}
    </>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
