"""The scheduling service: doctors, their schedules, appointments, and anamnesis records."""
