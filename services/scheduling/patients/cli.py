"""``mediai access-log verify``: check the access log's hash chains against the event log."""

from __future__ import annotations

import click
from msgspec.structs import replace

from services.scheduling.patients.verify import Verification


@click.group("access-log")
def access_log() -> None:
    """The access log of patients' personal data (LGPD Art. 37)."""


@access_log.command("verify")
@click.option("--tenant", help="One tenant's chain (default: every tenant's).")
def verify_command(tenant: str | None) -> None:
    """Walk each tenant's chain (every entry's hash, every link), compare its length with the
    reads on the event log and every entry with the read it was made from; exits 1 when an
    entry was edited or removed."""
    from deploy.cli import fail, run, settings_or_exit
    from services.scheduling.patients import store
    from services.scheduling.patients.verify import against_log, reads_of, verify_tenant
    from shared.bus import connect_bus
    from shared.db import create_pool

    settings = settings_or_exit()

    async def main() -> list[Verification]:
        pool = await create_pool(settings, max_size=2, statement_timeout=None)
        bus = await connect_bus(settings, "operator", streams="skip")
        try:
            tenants = [tenant] if tenant else await store.chained_tenants(pool)
            checked = []
            for one in tenants:
                verification = await verify_tenant(pool, bus, one)
                entries = await store.entries(pool, one)
                reads = await reads_of(bus, one, verification.reads_on_log)
                extra = against_log(entries, reads)
                checked.append(
                    replace(
                        verification,
                        problems=[*verification.problems, *extra],
                        intact=verification.intact and not extra,
                    )
                )
            return checked
        finally:
            await bus.close()
            await pool.close()

    try:
        verifications = run(main)
    except OSError as error:
        fail(f"cannot reach Postgres or NATS: {error}")
    broken = False
    for v in verifications:
        state = "intact" if v.intact else "BROKEN"
        click.echo(
            f"tenant {v.tenant}: {v.entries} entries, {v.reads_on_log} reads on the event log"
            f" ({v.pending} not folded yet): {state}"
        )
        for problem in v.problems:
            click.echo(f"  position {problem.position}: {problem.problem}")
        broken = broken or not v.intact
    if broken:
        raise SystemExit(1)
