"""Appointments' personal columns, sealed with the patient's personal key (``shared.phi``).

``patient_name``, ``patient_contact``, ``reason`` and ``cancel_reason`` are sealed before they
are written (by the API and by the receptionist agent's bookings alike) and opened only to
answer; each column's name is its path. Rows written before sealing hold clear text, which
opens as it is; erasing the patient empties the columns (``services.scheduling.patients``).
"""

from __future__ import annotations

from msgspec.structs import replace

from services.scheduling.store import Appointment
from shared.phi import PERSONAL, Phi

COLUMNS = ("patient_name", "patient_contact", "reason", "cancel_reason")


async def seal(
    phi: Phi, tenant: str, patient_ref: str, column: str, value: str | None
) -> str | None:
    if not value:
        return value
    return await phi.seal_text(
        value, tenant=tenant, patient_ref=patient_ref, kind=PERSONAL, path=column
    )


async def opened(phi: Phi, tenant: str, appointment: Appointment) -> Appointment:
    """The appointment with its personal columns in clear (``[apagado]`` once erased)."""
    values = {}
    for column in COLUMNS:
        value = getattr(appointment, column)
        if value:
            values[column] = await phi.open_text(value, tenant=tenant, path=column)
    return replace(appointment, **values) if values else appointment
