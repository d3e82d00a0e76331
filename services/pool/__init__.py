"""The agent worker pool: one per worker host, apart from the dispatcher, so any number of
dispatcher replicas share the pools there are, and a host's capacity is its own pool's."""
