"""``mediai billing``: audits, the full rebuild, invoices, price books, plans and limits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import click
import msgspec

from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.db import create_pool
from shared.outbox import relay_outbox

T = TypeVar("T")


def _settings() -> Settings:
    from deploy.cli import settings_or_exit

    return settings_or_exit()


@contextlib.asynccontextmanager
async def _connected(
    settings: Settings, bus: bool
) -> AsyncIterator[tuple[asyncpg.Pool, Bus | None]]:
    # A rebuild or an audit of a long period runs statements longer than a request's bound.
    pool = await create_pool(settings, max_size=4, statement_timeout=None)
    connected = await connect_bus(settings, "billing") if bus else None
    try:
        yield pool, connected
        if connected is not None:
            # Publish what this command recorded now, rather than at the next service relay.
            await relay_outbox(pool, connected)
    finally:
        if connected is not None:
            await connected.close()
        await pool.close()


def _run(main: Callable[[asyncpg.Pool, Bus | None], Awaitable[T]], *, bus: bool = True) -> T:
    from deploy.cli import fail, run
    from services.billing.admin import BillingAdminError
    from services.billing.audit import PriceBookNotFoundError
    from services.billing.periods import PeriodError
    from services.billing.pricing import PricingError
    from shared.replay import ReplayError

    settings = _settings()

    async def go() -> T:
        async with _connected(settings, bus) as (pool, connected):
            return await main(pool, connected)

    try:
        return run(go)
    except (BillingAdminError, PeriodError, PricingError, PriceBookNotFoundError) as error:
        fail(str(error), code=2)
    except ReplayError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot reach Postgres or NATS: {error}")


def _zone() -> ZoneInfo:
    return ZoneInfo(_settings().billing_timezone)


@click.group()
def billing() -> None:
    """Usage, invoices and audits by replay of the event stream."""


@billing.command("audit")
@click.option("--tenant", required=True, help="Tenant id (t...).")
@click.option("--from", "start", required=True, help="First day (YYYY-MM-DD) or ISO instant.")
@click.option("--to", "end", required=True, help="Last day, included (YYYY-MM-DD), or ISO instant.")
@click.option("--price-plan", help="What-if: price with this plan's version --price-version.")
@click.option("--price-version", type=int)
@click.option(
    "--keep-rows", is_flag=True, help="Keep the replayed rows in billing_replay.audit_usage."
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def audit(
    tenant: str,
    start: str,
    end: str,
    price_plan: str | None,
    price_version: int | None,
    keep_rows: bool,
    as_json: bool,
) -> None:
    """Replay TENANT's usage events from the stream and compare with the live projection and
    issued invoices, meter by meter, to the cent. Exit status 1 when something differs."""
    from services.billing.audit import run_audit
    from services.billing.periods import parse_range
    from services.billing.schemas import AuditReport

    if (price_plan is None) != (price_version is None):
        raise click.UsageError("give both --price-plan and --price-version, or neither")
    settings, zone = _settings(), _zone()
    what_if = (price_plan, price_version) if price_plan and price_version else None

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> AuditReport:
        assert bus is not None
        return await run_audit(
            pool,
            bus,
            tenant=tenant,
            period=parse_range(start, end, zone),
            zone=zone,
            lookback=timedelta(seconds=settings.billing_audit_lookback),
            what_if=what_if,
            keep_rows=keep_rows,
            split=settings,
        )

    report = _run(main)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(report)))
    else:
        r = report.replay
        click.echo(
            f"audit {report.id}: {report.period_start:%Y-%m-%d %H:%M}Z → "
            f"{report.period_end:%Y-%m-%d %H:%M}Z, {report.mode} {report.price_book}"
        )
        click.echo(
            f"replayed {r.applied} events (stream {r.first_sequence}..{r.last_sequence}; "
            f"{r.duplicates} duplicates, {r.rejected} rejected, {r.undecodable} unreadable) "
            f"in {report.seconds:.1f}s"
        )
        click.echo(f"{'meter':<30} {'replayed':>14} {'live':>14} {'Δ qty':>10} {'Δ cents':>9}")
        for m in report.meters:
            click.echo(
                f"{m.meter:<30} {m.replayed_quantity:>14} {m.live_quantity:>14} "
                f"{m.quantity_difference:>10} {m.cents_difference:>9}"
            )
        click.echo(
            f"total {report.currency} cents: replayed {report.replayed_cents}, "
            f"live {report.live_cents}, invoiced {report.invoiced_cents}"
        )
        for invoice in report.invoices:
            click.echo(
                f"invoice {invoice.id}: invoiced {invoice.invoiced_cents}, replayed "
                f"{invoice.replayed_cents}, difference {invoice.difference_cents}"
            )
        click.echo(
            "MATCHES"
            if report.matches
            else f"DIFFERS ({report.row_difference_count} usage rows differ)"
        )
    if not report.matches:
        raise SystemExit(1)


@billing.command("rebuild")
def rebuild_command() -> None:
    """Rebuild the whole usage projection from the beginning of the stream (the live consumer
    pauses meanwhile)."""
    from services.billing.rebuild import RebuildResult, rebuild

    settings, zone = _settings(), _zone()

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> RebuildResult:
        assert bus is not None
        return await rebuild(pool, bus, zone, split=settings)

    result = _run(main)
    r = result.replay
    click.echo(
        f"rebuilt from {r.events} events (through stream sequence {result.read_until}; "
        f"{r.duplicates} duplicates, {r.rejected} rejected, {r.undecodable} unreadable) "
        f"into {result.rows} usage rows in {result.seconds:.1f}s "
        f"({result.events_per_second:,.0f} events/s)"
    )


@billing.group("invoices")
def invoices_group() -> None:
    """Monthly invoices."""


@invoices_group.command("issue")
@click.option("--month", required=True, help="YYYY-MM (billing time zone).")
@click.option("--tenant", help="Only this tenant (default: every tenant with usage that month).")
def invoices_issue(month: str, tenant: str | None) -> None:
    """Freeze and announce MONTH's invoices (already issued ones are left as they are)."""
    from services.billing.invoices import issue_month
    from services.billing.meters import DEFAULT
    from services.billing.schemas import Invoice

    zone = _zone()

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> list[tuple[Invoice, bool]]:
        return await issue_month(pool, month, zone, DEFAULT, tenant)

    for invoice, new in _run(main):
        click.echo(
            f"{'issued ' if new else 'already'} {invoice.id}  {invoice.currency} "
            f"{invoice.total_cents / 100:,.2f}"
        )


@billing.group("prices")
def prices_group() -> None:
    """Versioned price books."""


@prices_group.command("publish")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def prices_publish(path: Path) -> None:
    """Publish the price book in PATH (JSON) as its plan's next version."""
    from services.billing.admin import PriceBookFile, publish_price_book

    try:
        book = msgspec.json.decode(path.read_bytes(), type=PriceBookFile)
    except msgspec.DecodeError as error:
        raise click.BadParameter(str(error), param_hint="PATH") from None

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> int:
        return await publish_price_book(pool, book)

    version = _run(main)
    click.echo(f"published {book.plan}@{version}, in force from {book.effective_from.isoformat()}")


@prices_group.command("list")
def prices_list() -> None:
    """Every price book version and its prices."""
    from services.billing.pricing import PriceBook
    from services.billing.queries import price_books

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> list[PriceBook]:
        async with pool.acquire() as conn:
            return await price_books(conn)

    for book in _run(main, bus=False):
        click.echo(f"{book.label}  from {book.effective_from.isoformat()}  {book.currency}")
        for meter, price in sorted(book.prices.items()):
            click.echo(f"    {meter:<30} {price.cents:>6} cents per {price.per}")


@billing.command("assign-plan")
@click.option("--tenant", required=True)
@click.option("--plan", required=True)
@click.option("--from", "start", required=True, help="Day (YYYY-MM-DD) or ISO instant it starts.")
def assign_plan_command(tenant: str, plan: str, start: str) -> None:
    """Price TENANT's usage by PLAN from a date on."""
    from services.billing.admin import assign_plan
    from services.billing.periods import parse_bound

    moment = parse_bound(start, _zone(), end=False)

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> None:
        await assign_plan(pool, tenant, plan, moment)

    _run(main)
    click.echo(f"{tenant} is on plan {plan} from {moment.isoformat()}")


@billing.command("limit")
@click.option("--tenant", required=True)
@click.option("--meter", required=True)
@click.option("--monthly", type=int, help="Cap per billing month, in the meter's base unit.")
@click.option("--remove", is_flag=True, help="Remove the cap.")
def limit_command(tenant: str, meter: str, monthly: int | None, remove: bool) -> None:
    """Set or remove TENANT's monthly cap on METER (80% and 100% are announced as events)."""
    from services.billing.admin import set_limit
    from shared.events import Envelope

    if remove == (monthly is not None):
        raise click.UsageError("give --monthly N or --remove")
    zone = _zone()

    async def main(pool: asyncpg.Pool, bus: Bus | None) -> list[Envelope]:
        return await set_limit(pool, tenant, meter, monthly, datetime.now(UTC), zone)

    for event in _run(main):
        click.echo(f"{event.type}  {msgspec.json.encode(event.data).decode()}")


@billing.command("meters")
def meters_command() -> None:
    """The meter catalogue: what is counted, in which unit, how."""
    from services.billing.meters import CATALOGUE

    for meter in CATALOGUE:
        click.echo(f"{meter.id:<30} {meter.unit:<12} {meter.aggregation:<9} {meter.description}")
