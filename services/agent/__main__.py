"""python -m services.agent: ``mediai agent-worker`` alone (services/agent/command.py)."""

from services.agent.command import agent_worker

if __name__ == "__main__":  # tools that import every module (the docs' generators) pass by
    agent_worker(prog_name="mediai agent-worker")
