"""Operator commands: dead letters and generated docs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click


def register(cli: click.Group) -> None:
    """Add the operator commands to the ``mediai`` group."""
    cli.add_command(deadletters)
    cli.add_command(docs)
    from services.agent.command import agent_worker

    cli.add_command(agent_worker)
    from services.billing.cli import billing

    cli.add_command(billing)


@click.group()
def deadletters() -> None:
    """Messages consumers gave up on: list them, replay one."""


@deadletters.command("list")
@click.option("--limit", default=50, show_default=True)
def deadletters_list(limit: int) -> None:
    """The newest dead letters: sequence, consumer, event type, reason."""
    from deploy.cli import settings_or_exit
    from shared.bus import connect_bus
    from shared.deadletters import list_dead_letters
    from shared.events import DeadLettered

    settings = settings_or_exit()

    async def main() -> None:
        bus = await connect_bus(settings, "operator")
        try:
            letters = await list_dead_letters(bus, limit=limit)
        finally:
            await bus.close()
        if not letters:
            click.echo("no dead letters")
        for sequence, event in letters:
            record = event.data
            assert isinstance(record, DeadLettered)
            click.echo(
                f"{sequence:>6}  {event.time:%Y-%m-%d %H:%M:%S}  {record.consumer:<24} "
                f"{record.original_type or '?':<36} {record.reason[:80]}"
            )

    asyncio.run(main())


@deadletters.command("replay")
@click.argument("sequence", type=int)
def deadletters_replay(sequence: int) -> None:
    """Publish dead letter SEQUENCE's original message again."""
    from deploy.cli import fail, settings_or_exit
    from shared.bus import connect_bus
    from shared.deadletters import DeadLetterNotFoundError, replay

    settings = settings_or_exit()

    async def main() -> str:
        bus = await connect_bus(settings, "operator")
        try:
            return await replay(bus, sequence)
        finally:
            await bus.close()

    try:
        subject = asyncio.run(main())
    except DeadLetterNotFoundError as error:
        fail(str(error))
    click.echo(f"replayed to {subject}")


@click.group()
def docs() -> None:
    """Generated documentation."""


@docs.command("events")
@click.option("--check", is_flag=True, help="Exit 1 if docs/events.md is not up to date.")
def docs_events(check: bool) -> None:
    """Write docs/events.md from the event schema."""
    from deploy.eventdocs import render

    path = Path(__file__).resolve().parent.parent / "docs" / "events.md"
    text = render()
    if check:
        if not path.is_file() or path.read_text() != text:
            raise SystemExit("docs/events.md is out of date: run 'mediai docs events'")
        return
    path.write_text(text)
    click.echo(f"wrote {path}")
