"""Billing: usage metered from the event log, priced, invoiced, and auditable by replay."""
