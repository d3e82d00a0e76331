"""The agent worker: a livekit-agents AgentServer that runs one AgentSession per dispatched job."""
