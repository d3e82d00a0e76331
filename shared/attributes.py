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
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"

DISPATCH_ID = "mediai.dispatch.id"
AGENT_ROLE = "mediai.agent.role"
# How an agent job ended (its session's end reason, or why it could not start).
AGENT_OUTCOME = "mediai.agent.outcome"
LIVEKIT_JOB_ID = "mediai.livekit.job_id"
# LiveKit's id of one room session (``RM_…``): every webhook of a room carries it, so a search
# by it finds them all, with the agent jobs in that room.
ROOM_SID = "mediai.room.sid"
# The trace of the room's ``room_started`` webhook, on every later webhook of the room: a span
# link does the same where the backend keeps links (Zipkin does not).
ROOM_TRACE_ID = "mediai.room.trace_id"
