"""MediAI's services. Each is its own process; they talk only through events on NATS."""

from __future__ import annotations

from pathlib import Path


def http_services() -> list[str]:
    """Every service with an HTTP app (``services/<name>/app.py`` with ``create_app``)."""
    return sorted(p.parent.name for p in Path(__file__).parent.glob("*/app.py"))
