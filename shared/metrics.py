"""Prometheus metrics, in one place: their names, labels and meaning.

Every service serves them at ``/metrics`` (on its own port, never through the gateway). Labels
are bounded, non-personal values: route templates (never paths, which carry room names and
identities), consumer and task names, event types, roles, reasons. docs/operations.md lists
them with the dashboard and alert rules in deploy/observability/.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- HTTP requests (shared.http_telemetry) ----------------------------------------------------
# ``path`` is the route template, never the path; ``app_name`` the service.

HTTP_REQUESTS = Counter(
    "mediai_http_requests_total",
    "HTTP requests answered, by method, route, status code and service",
    ["method", "path", "status_code", "app_name"],
)
HTTP_DURATION = Histogram(
    "mediai_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route, status code and service",
    ["method", "path", "status_code", "app_name"],
)
HTTP_IN_PROGRESS = Gauge(
    "mediai_http_requests_in_progress",
    "HTTP requests being answered, by method, route and service",
    ["method", "path", "app_name"],
)

# -- consumers (shared.consumer) --------------------------------------------------------------

CONSUMED = Counter(
    "mediai_consumer_messages_total",
    "Messages a consumer settled, by outcome: ok, retried (a failure, redelivered later), "
    "dead_lettered, skipped (a replay for another consumer)",
    ["consumer", "event_type", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "mediai_consumer_handle_seconds",
    "Time to handle one message, outages waited out included",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REDELIVERED = Counter(
    "mediai_consumer_redeliveries_total",
    "Messages received again (a failure, a crash, an ack lost)",
    ["consumer"],
)
PENDING = Gauge(
    "mediai_consumer_pending",
    "Messages in the stream the consumer has not acknowledged yet (its lag)",
    ["consumer"],
)
WAITING = Gauge(
    "mediai_consumer_waiting",
    "1 while a consumer holds a message, waiting for a dependency to come back",
    ["consumer"],
)
DEAD_LETTERS = Counter(
    "mediai_dead_letters_total",
    "Messages dead-lettered (published to the dead-letter stream), by consumer",
    ["consumer"],
)

# -- the outbox (shared.outbox) ---------------------------------------------------------------

OUTBOX_SET_ASIDE = Counter(
    "mediai_outbox_set_aside_total",
    "Outbox rows the relay set aside because it cannot decode them ('mediai streams' lists them)",
)

# -- background tasks (shared.background) ----------------------------------------------------

TASK_UP = Gauge(
    "mediai_task_up",
    "1 while a background task runs, 0 while it waits for a dependency or restarts",
    ["task"],
)
TASK_RESTARTS = Counter(
    "mediai_task_restarts_total", "Restarts of a background task after a failure", ["task"]
)

# -- dispatches and the agent worker pool (services/dispatcher) --------------------------------

DISPATCH_OUTCOMES = Counter(
    "mediai_dispatch_outcomes_total",
    "Dispatches reaching a state: joined, ended or failed (with its reason)",
    ["role", "state", "reason"],
)
POOL_WORKERS = Gauge(
    "mediai_agent_pool_workers",
    "Agent worker processes of this pool, by state: starting, registered, stopping",
    ["state"],
)
POOL_LOAD = Gauge(
    "mediai_agent_pool_load",
    "The mean load (0-1) of the pool's registered workers, as they report it to LiveKit",
)
POOL_ACTIVE_JOBS = Gauge(
    "mediai_agent_pool_active_jobs", "Agent sessions running on the pool's workers"
)
POOL_CAPACITY = Gauge(
    "mediai_agent_pool_capacity_jobs",
    "Sessions the pool can run at its maximum size (workers x jobs per worker)",
)
