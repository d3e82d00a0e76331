"""Operator commands: dead letters and generated docs."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add the operator commands to the ``mediai`` group."""
