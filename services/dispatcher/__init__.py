"""The dispatcher: agent dispatches, their state from the event log, the worker pool."""
