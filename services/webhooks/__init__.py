"""The webhooks service: LiveKit's signed webhooks in, one deduplicated event each out."""
