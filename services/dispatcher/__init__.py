"""The dispatcher: agent dispatches and their state from the event log (the agent worker pools
are their own service, services/pool)."""
