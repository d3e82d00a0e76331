"""Patients' rights (LGPD): erasure with its certificate, the export of what MediAI holds about a
patient, and the access log. Scheduling hosts them because it holds the patient's records
(appointments, the anamnesis): the export reads them and the erasure empties them in its own
transactions; what other services hold follows the ``ErasureRequested`` event."""
