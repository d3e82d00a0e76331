"""Monthly invoices: integer cents, the price book version that priced each line, isolation."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg

from deploy.stack import StackState
from shared.bus import Bus
from shared.config import Settings
from shared.events.billing import InvoiceIssued, PriceBookPublished
from shared.events.rooms import EgressEnded, EgressStarted
from tests import billing_script as script
from tests.billing_support import caught_up, client, line, mediai, new_tenant, publish
from tests.support import watch


def _all_cents_are_integers(invoice: dict[str, Any]) -> None:
    assert isinstance(invoice["totalCents"], int)
    for item in invoice["lines"]:
        assert isinstance(item["amountCents"], int) and isinstance(item["unitPriceCents"], int)
    assert invoice["totalCents"] == sum(item["amountCents"] for item in invoice["lines"])


async def test_a_month_is_drafted_then_issued_frozen_and_announced(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant, key = await new_tenant(pool)
    sequences = await publish(bus, script.envelopes(tenant))
    await caught_up(bus)
    invoice_id = f"inv-{tenant}-2001-03"
    async with client(stack, key) as http:
        listed = (await http.get("/v1/invoices")).json()["invoices"]
        assert [(i["id"], i["status"], i["totalCents"]) for i in listed] == [
            (invoice_id, "draft", script.TOTAL_CENTS)
        ]
        draft = (await http.get(f"/v1/invoices/{invoice_id}")).json()
        _all_cents_are_integers(draft)
        participant = line(draft, "participant_time")
        assert (
            participant["quantity"],
            participant["unitPriceCents"],
            participant["per"],
            participant["amountCents"],
        ) == (315_000, 2, 60_000, 11)
        assert {
            item["meter"]: item["amountCents"] for item in draft["lines"] if item["amountCents"]
        } == script.CENTS
        assert draft["priceBooks"] == ["standard@1"] and draft["currency"] == "BRL"
        # The stream range that produced it: the patient's join … the patient's leave.
        assert (draft["firstSequence"], draft["lastSequence"]) == (sequences[0], sequences[-1])

        async with watch(bus, InvoiceIssued, tenant=tenant) as announced:
            code, out, err = await mediai(
                settings, "billing", "invoices", "issue", "--month", "2001-03", "--tenant", tenant
            )
            assert code == 0, err
            assert out.startswith(f"issued  {invoice_id}")
            event = await announced.next()
        assert event.data.invoice_id == invoice_id
        assert event.data.total_cents == script.TOTAL_CENTS
        assert (event.data.first_sequence, event.data.last_sequence) == (
            sequences[0],
            sequences[-1],
        )

        issued = (await http.get(f"/v1/invoices/{invoice_id}")).json()
        assert issued["status"] == "issued" and issued["issuedAt"]
        assert issued["lines"] == draft["lines"] and issued["totalCents"] == script.TOTAL_CENTS
        code, out, _ = await mediai(
            settings, "billing", "invoices", "issue", "--month", "2001-03", "--tenant", tenant
        )
        assert code == 0 and out.startswith("already")


async def test_another_tenant_cannot_read_usage_or_invoices(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant, _ = await new_tenant(pool)
    _, other_key = await new_tenant(pool, "Curious clinic")
    await publish(bus, script.envelopes(tenant))
    await caught_up(bus)
    code, _, err = await mediai(
        settings, "billing", "invoices", "issue", "--month", "2001-03", "--tenant", tenant
    )
    assert code == 0, err
    async with client(stack, other_key) as http:
        assert (await http.get(f"/v1/invoices/inv-{tenant}-2001-03")).status_code == 404
        assert (await http.get("/v1/invoices")).json()["invoices"] == []
        usage = await http.get("/v1/usage", params={"from": "2001-03-01", "to": "2001-03-31"})
        assert usage.json()["rows"] == []


async def test_a_new_price_version_mid_month_prices_each_side_and_lines_say_which(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    tenant, key = await new_tenant(pool)
    plan = f"clinic-{secrets.token_hex(3)}"
    versions = [("2000-01-01T00:00:00Z", 8), ("2001-04-15T00:00:00-03:00", 10)]
    async with watch(bus, PriceBookPublished) as published:
        for number, (since, cents) in enumerate(versions, start=1):
            path = tmp_path / f"{plan}-{number}.json"
            path.write_text(
                json.dumps(
                    {
                        "plan": plan,
                        "effective_from": since,
                        "prices": {"egress_time": {"cents": cents, "per": 60_000}},
                    }
                )
            )
            code, out, err = await mediai(settings, "billing", "prices", "publish", str(path))
            assert code == 0, err
            assert out.startswith(f"published {plan}@{number}")
        event = await published.wait_for(lambda e: e.data.plan == plan and e.data.version == 2)
    assert event.data.prices[0].cents == 10
    code, _, err = await mediai(
        settings,
        "billing",
        "assign-plan",
        "--tenant",
        tenant,
        "--plan",
        plan,
        "--from",
        "2001-04-01",
    )
    assert code == 0, err
    egresses = []
    for day, egress in (("10", "EG_a"), ("20", "EG_b")):
        start = script.at("15:00:00").replace(month=4, day=int(day))
        egresses += [
            EgressStarted(room="r", egress_id=egress, started_at=start),
            EgressEnded(
                room="r", egress_id=egress, ended_at=start.replace(minute=10), status="complete"
            ),
        ]
    await publish(bus, script.envelopes(tenant, egresses))
    await caught_up(bus)
    async with client(stack, key) as http:
        invoice = (await http.get(f"/v1/invoices/inv-{tenant}-2001-04")).json()
    _all_cents_are_integers(invoice)
    assert [
        (i["priceVersion"], i["quantity"], i["unitPriceCents"], i["amountCents"])
        for i in invoice["lines"]
    ] == [(1, 600_000, 8, 80), (2, 600_000, 10, 100)]
    assert invoice["priceBooks"] == [f"{plan}@1", f"{plan}@2"]
    assert invoice["totalCents"] == 180


async def test_some_dispatches_cost_so_far_is_priced_as_the_draft_prices_them(
    stack: StackState, bus: Bus, pool: asyncpg.Pool
) -> None:
    """The console's "agents' cost so far" of a session: that session's dispatches only, priced
    with the book in force, line for line as the month's draft prices the same usage."""
    from datetime import UTC, datetime, timedelta

    from shared.events import envelope
    from shared.events.agents import AgentUsageReported

    tenant, key = await new_tenant(pool)
    now = datetime.now(UTC).replace(microsecond=0)
    start = max(now - timedelta(minutes=2), now.replace(day=1, hour=0, minute=0, second=0))

    def usage(dispatch: str, tokens: int) -> Any:
        report = AgentUsageReported(
            dispatch_id=dispatch, room="consulta-1", role="intake", period_start=start,
            period_end=now, final=True, llm_prompt_tokens=tokens, llm_completion_tokens=tokens // 4,
            session_seconds=61.0, sequence=1,
        )  # fmt: skip
        return envelope(report, source="mediai/agent", tenant=tenant, subject=dispatch)

    ours, other = f"d-{secrets.token_hex(4)}", f"d-{secrets.token_hex(4)}"
    await publish(bus, [usage(ours, 120_000), usage(other, 40_000)])
    await caught_up(bus)
    async with client(stack, key) as http:
        alone = await new_tenant(pool)  # the same usage of one dispatch, alone in a month
        cost = (await http.get("/v1/usage/cost", params={"dispatch": ours})).json()
        both = (
            await http.get("/v1/usage/cost", params=[("dispatch", ours), ("dispatch", other)])
        ).json()
        missing = await http.get("/v1/usage/cost")
    await publish(bus, [msgspec_replace_tenant(usage(ours, 120_000), alone[0])])
    await caught_up(bus)
    async with client(stack, alone[1]) as http:
        month = now.strftime("%Y-%m")
        draft = (await http.get(f"/v1/invoices/inv-{alone[0]}-{month}")).json()
    assert cost["dispatches"] == [ours] and cost["currency"] == "BRL"
    assert cost["totalCents"] == sum(item["amountCents"] for item in cost["lines"]) > 0
    assert [(i["meter"], i["quantity"], i["amountCents"]) for i in cost["lines"]] == [
        (i["meter"], i["quantity"], i["amountCents"]) for i in draft["lines"]
    ]
    assert both["totalCents"] > cost["totalCents"]
    assert missing.status_code == 400


def msgspec_replace_tenant(event: Any, tenant: str) -> Any:
    import msgspec

    from shared.events import new_event_id

    return msgspec.structs.replace(event, tenant=tenant, id=new_event_id())
