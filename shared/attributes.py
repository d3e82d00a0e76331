"""Span attribute names, in one place: the OpenTelemetry conventions plus our ``mediai.*``.

Personal data never goes into spans; there is deliberately no name here for identities,
participant names, transcripts or clinical content.
"""

MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION = "messaging.operation.type"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CONSUMER_GROUP = "messaging.consumer.group.name"
DB_SYSTEM = "db.system.name"

EVENT_TYPE = "mediai.event.type"
TENANT = "mediai.tenant"
STREAM_SEQUENCE = "mediai.stream.sequence"
DELIVERIES = "mediai.deliveries"

# HTTP server spans (shared.http_telemetry): the method, the route template (never the path,
# which carries room names and identities) and the status code; nothing about the client.
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
