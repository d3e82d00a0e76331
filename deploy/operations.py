"""Operator commands: streams, dead letters and generated docs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from shared.bus import Bus
    from shared.config import Settings


def register(cli: click.Group) -> None:
    """Add the operator commands to the ``mediai`` group."""
    cli.add_command(streams)
    cli.add_command(deadletters)
    cli.add_command(docs)
    from services.agent.command import agent_worker

    cli.add_command(agent_worker)
    from services.billing.cli import billing

    cli.add_command(billing)
    from services.keys.cli import keys

    cli.add_command(keys)
    from services.rooms.cli import rooms
    from services.scheduling.patients.cli import access_log

    cli.add_command(rooms)
    cli.add_command(access_log)


async def _operator_bus(settings: Settings) -> Bus:
    """A connection for an operator command that reads or changes streams itself (streams="skip":
    it must not create anything as a side effect). TimeoutError when NATS is not there."""
    from shared.bus import connect_bus

    # nats-py logs a traceback per failed attempt; the command says it in one line instead.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    return await asyncio.wait_for(connect_bus(settings, "operator", streams="skip"), timeout=5)


@click.group(invoke_without_command=True)
@click.pass_context
def streams(context: click.Context) -> None:
    """The streams: their settings, contents and differences from the declaration, and the
    outbox rows waiting for them."""
    if context.invoked_subcommand is not None:
        return
    import asyncpg

    from deploy.cli import fail, settings_or_exit
    from shared import streams as declared
    from shared.db import create_pool
    from shared.outbox import OutboxState, outbox_state

    settings = settings_or_exit()

    async def main() -> tuple[list[declared.StreamStatus], OutboxState | str]:
        bus = await _operator_bus(settings)
        try:
            statuses = await declared.stream_status(bus.js, declared.stream_configs(settings))
        finally:
            await bus.close()
        try:
            pool = await create_pool(settings, min_size=1, max_size=1)
        except (OSError, asyncpg.PostgresError) as error:
            return statuses, f"unknown (Postgres unreachable: {type(error).__name__})"
        try:
            return statuses, await outbox_state(pool)
        finally:
            await pool.close()

    try:
        statuses, outbox = asyncio.run(main())
    except (OSError, TimeoutError):
        fail("cannot reach NATS at NATS_URL")
    for status in statuses:
        click.echo(declared.describe(status))
        for difference in status.differences:
            click.echo(f"  differs: {difference}")
    if any(status.info is None or status.differences for status in statuses):
        click.echo("run 'mediai streams apply' to apply the declaration")
    if isinstance(outbox, str):
        click.echo(f"outbox: {outbox}")
        return
    click.echo(f"outbox: {outbox.pending} pending, {outbox.set_aside_count} set aside")
    for row in outbox.set_aside:
        click.echo(
            f"  set aside: position {row.position}  event {row.event_id}  "
            f"written {row.created_at:%Y-%m-%d %H:%M:%S}  {row.reason[:100]}"
        )


@streams.command("apply")
@click.option(
    "--allow-weaken",
    is_flag=True,
    help="Also apply changes that weaken a stream (fewer replicas, shorter retention, ...).",
)
def streams_apply(allow_weaken: bool) -> None:
    """Create missing streams and bring the others to the declaration, printing each change;
    then publish the platform's pending events (a tenant or key change whose command found NATS
    away), which every deployment's streams step thus delivers."""
    import asyncpg

    from deploy.cli import fail, publish_platform_events, settings_or_exit
    from shared.db import create_pool
    from shared.streams import StreamApplyError, apply_streams, stream_configs

    settings = settings_or_exit()

    async def main() -> list[str]:
        bus = await _operator_bus(settings)
        try:
            changes = await apply_streams(
                bus.js, stream_configs(settings), allow_weaken=allow_weaken, report=click.echo
            )
        finally:
            await bus.close()
        try:
            pool = await create_pool(settings, min_size=1, max_size=1)
        except (OSError, asyncpg.PostgresError) as error:  # the streams are what this step is for
            click.echo(f"note: platform events not checked: PostgreSQL: {error}", err=True)
            return changes
        try:
            if published := await publish_platform_events(settings, pool):
                click.echo(f"published {published} pending platform events")
        finally:
            await pool.close()
        return changes

    try:
        changes = asyncio.run(main())
    except StreamApplyError as error:
        fail(str(error))
    except (OSError, TimeoutError):
        fail("cannot reach NATS at NATS_URL")
    if not changes:
        click.echo("every stream matches its declaration")


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
        bus = await connect_bus(settings, "operator", streams="skip")
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
        bus = await connect_bus(settings, "operator", streams="skip")
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


@docs.command("openapi")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if docs/openapi.json is not the code's, or a breaking change is not declared.",
)
@click.option(
    "--per-service",
    type=click.Path(file_okay=False, path_type=Path),
    help="Instead, write each public service's own document there (<service>.json): what the "
    "web console's TypeScript client is generated from (make client).",
)
def docs_openapi(check: bool, per_service: Path | None) -> None:
    """Write docs/openapi.json, the whole API's OpenAPI document, from the services' code.

    A breaking change (oasdiff's) must first be declared in docs/openapi-declared.txt."""
    from deploy import openapi
    from deploy.cli import fail

    if per_service is not None:
        for path in openapi.write_per_service(per_service):
            click.echo(str(path))
        return

    document = openapi.api_document()
    try:
        if check:
            problems = openapi.check(document)
            if problems:
                fail("\n".join(problems))
            return
        if openapi.DOCUMENT.is_file() and (found := openapi.undeclared_breaking_of(document)):
            fail(
                f"breaking changes, not declared in docs/openapi-declared.txt (add each line "
                f"with its reason, then run this again):\n{found}"
            )
    except openapi.ApiCheckError as error:
        fail(str(error))
    openapi.DOCUMENT.write_text(openapi.render(document))
    click.echo(f"wrote {openapi.DOCUMENT}")


@docs.command("nats-users")
@click.option("--check", is_flag=True, help="Exit 1 if the file is not up to date.")
def docs_nats_users(check: bool) -> None:
    """Write deploy/production/nats/users.conf: each component's NATS user and permissions."""
    from deploy.bus_users import production_users

    path = Path(__file__).resolve().parent / "production" / "nats" / "users.conf"
    text = production_users()
    if check:
        if not path.is_file() or path.read_text() != text:
            raise SystemExit(f"{path.name} is out of date: run 'mediai docs nats-users'")
        return
    path.write_text(text)
    click.echo(f"wrote {path}")
