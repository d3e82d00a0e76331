"""``mediai rooms``: the read model rebuilt from the event log and compared with the live one."""

from __future__ import annotations

import secrets

import asyncpg
import click

from services.rooms.rebuild import RebuildResult, TableDifference


@click.group()
def rooms() -> None:
    """The rooms read model."""


@rooms.command("rebuild")
@click.option("--keep", is_flag=True, help="Keep the rebuilt schema (its name is printed).")
def rebuild_command(keep: bool) -> None:
    """Rebuild the read model from the event log alone, in a scratch schema, and compare it
    with the live one; exits 1 if they differ. Rooms that change while it runs show up as
    differences too: run it again, or on a quiet system, to tell them apart."""
    from deploy.cli import fail, run, settings_or_exit
    from services.rooms.rebuild import differences, drop, rebuild_into
    from shared.bus import connect_bus
    from shared.replay import ReplayError

    settings = settings_or_exit()
    schema = f"rooms_rebuild_{secrets.token_hex(4)}"

    async def main() -> tuple[RebuildResult, list[TableDifference]]:
        bus = await connect_bus(settings, "rooms", streams="skip")
        conn = await asyncpg.connect(settings.database_url)
        try:
            live = await conn.fetchval("SELECT current_schema()")
            result = await rebuild_into(conn, bus, schema)
            try:
                return result, await differences(conn, schema, live)
            finally:
                if not keep:
                    await drop(conn, schema)
        finally:
            await conn.close()
            await bus.close()

    try:
        result, found = run(main)
    except ReplayError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot reach Postgres or NATS: {error}")
    click.echo(
        f"rebuilt from {result.applied} events (through stream sequence {result.read_until}; "
        f"{result.duplicates} duplicates, {result.undecodable} unreadable) "
        f"in {result.seconds:.1f}s" + (f" into schema {schema}" if keep else "")
    )
    if not found:
        click.echo("the live read model matches the rebuilt one")
        return
    for difference in found:
        click.echo(
            f"DIFFERS {difference.table}: live only {difference.live_only}, "
            f"rebuilt only {difference.rebuilt_only}"
        )
    raise SystemExit(1)
