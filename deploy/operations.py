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
    from services.keys.cli import keys

    cli.add_command(keys)


@click.group()
def deadletters() -> None:
    """Messages consumers gave up on: list them, replay them."""


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
        bus = await connect_bus(settings, "operator", declare=False)
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
@click.argument("sequence", type=int, required=False)
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@click.option("--consumer", help="Replay the dead letters of this consumer (durable name).")
@click.option("--type", "event_type", help="Replay the dead letters of this event type.")
def deadletters_replay(
    sequence: int | None, everything: bool, consumer: str | None, event_type: str | None
) -> None:
    """Publish dead letters again, each for the consumer that gave up on it: SEQUENCE alone,
    or in bulk (--all, --consumer, --type; the filters combine). A replayed dead letter leaves
    the list; one that fails again comes back to it."""
    from deploy.cli import fail, settings_or_exit
    from shared.bus import connect_bus
    from shared.deadletters import DeadLetterNotFoundError, matching, replay, replay_all

    bulk = everything or consumer is not None or event_type is not None
    if (sequence is None) == (not bulk):
        fail("give one dead letter's SEQUENCE, or --all / --consumer / --type", code=2)
    settings = settings_or_exit()

    async def main() -> list[str]:
        bus = await connect_bus(settings, "operator", declare=False)
        try:
            if sequence is not None:
                return [await replay(bus, sequence)]
            sequences = await replay_all(bus, matching(consumer=consumer, event_type=event_type))
            return [f"{len(sequences)} dead letter(s)"]
        finally:
            await bus.close()

    try:
        done = asyncio.run(main())
    except DeadLetterNotFoundError as error:
        fail(str(error))
    click.echo(f"replayed {done[0]}" if sequence is None else f"replayed to {done[0]}")


@click.group()
def docs() -> None:
    """Generated documentation."""


@docs.command("events")
@click.option("--check", is_flag=True, help="Exit 1 if the generated docs are not up to date.")
def docs_events(check: bool) -> None:
    """Write docs/events.md, and the event-field inventory of docs/privacy.md, from the schema."""
    from deploy import eventdocs, privacydocs

    folder = Path(__file__).resolve().parent.parent / "docs"
    privacy = folder / "privacy.md"
    generated = {
        folder / "events.md": eventdocs.render(),
        privacy: privacydocs.render(privacy.read_text()),
    }
    for path, text in generated.items():
        if check:
            if path.read_text() != text:
                raise SystemExit(f"docs/{path.name} is out of date: run 'mediai docs events'")
            continue
        path.write_text(text)
        click.echo(f"wrote {path}")
