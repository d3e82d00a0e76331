"""Audit by replay of the raw stream, what-if prices, and the full rebuild."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import asyncpg

from deploy.stack import StackState
from shared.bus import Bus
from shared.config import Settings
from shared.events.billing import AuditCompleted
from tests import billing_script as script
from tests.billing_support import caught_up, client, mediai, new_tenant, publish, usage_totals
from tests.support import watch

MARCH = {"from": "2001-03-01", "to": "2001-03-31"}


def meters(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["meter"]: m for m in report["meters"]}


async def _tenant_with_a_consultation(bus: Bus, pool: asyncpg.Pool) -> tuple[str, str]:
    tenant, key = await new_tenant(pool)
    await publish(bus, script.envelopes(tenant))
    await caught_up(bus)
    return tenant, key


async def test_after_a_normal_run_the_audit_finds_no_difference_and_is_an_event(
    stack: StackState, bus: Bus, pool: asyncpg.Pool
) -> None:
    tenant, key = await _tenant_with_a_consultation(bus, pool)
    async with client(stack, key) as http, watch(bus, AuditCompleted, tenant=tenant) as done:
        response = await http.post("/v1/audits", json=MARCH)
        assert response.status_code == 201, response.text
        report = response.json()
        event = await done.next()
        assert (await http.get(f"/v1/audits/{report['id']}")).json() == report
    assert report["matches"] is True and report["mode"] == "in_force"
    assert {m: row["replayedQuantity"] for m, row in meters(report).items()} == script.TOTALS
    assert all(row["quantityDifference"] == row["centsDifference"] == 0 for row in report["meters"])
    assert report["replayedCents"] == report["liveCents"] == script.TOTAL_CENTS
    assert report["replay"]["applied"] == len(script.consultation())
    assert report["rowDifferenceCount"] == 0 and report["invoicedCents"] is None
    assert event.data.audit_id == report["id"] and event.data.matches
    assert event.data.replayed_cents == script.TOTAL_CENTS


async def test_a_tampered_usage_row_is_reported_exactly_against_live_and_invoice(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant, key = await _tenant_with_a_consultation(bus, pool)
    code, _, err = await mediai(
        settings, "billing", "invoices", "issue", "--month", "2001-03", "--tenant", tenant
    )
    assert code == 0, err
    tampered = await pool.execute(
        "UPDATE billing.usage SET quantity = quantity + 60000 WHERE tenant = $1"
        " AND meter = 'participant_time' AND window_start = $2",
        tenant,
        script.at("13:01:00"),
    )
    assert tampered == "UPDATE 1"
    async with client(stack, key) as http:
        report = (await http.post("/v1/audits", json=MARCH)).json()
    assert report["matches"] is False
    participant = meters(report)["participant_time"]
    # Live now says 375000 ms = 12.5 → 13 cents; the stream says 315000 ms = 10.5 → 11.
    assert (participant["replayedQuantity"], participant["liveQuantity"]) == (315_000, 375_000)
    assert (participant["quantityDifference"], participant["centsDifference"]) == (-60_000, -2)
    others = [row for name, row in meters(report).items() if name != "participant_time"]
    assert all(row["quantityDifference"] == row["centsDifference"] == 0 for row in others)
    assert report["rowDifferenceCount"] == 1
    [row] = report["rowDifferences"]
    assert (row["meter"], row["replayed"], row["live"]) == ("participant_time", 120_000, 180_000)
    [invoice] = report["invoices"]  # issued before the tampering: it still agrees with the stream
    assert (invoice["invoicedCents"], invoice["replayedCents"], invoice["differenceCents"]) == (
        script.TOTAL_CENTS,
        script.TOTAL_CENTS,
        0,
    )

    code, out, _ = await mediai(
        settings,
        "billing",
        "audit",
        "--tenant",
        tenant,
        "--from",
        "2001-03-01",
        "--to",
        "2001-03-31",
    )
    assert code == 1 and "DIFFERS (1 usage rows differ)" in out
    assert "participant_time" in out


async def test_a_what_if_price_book_gives_the_expected_total(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings, tmp_path: Path
) -> None:
    _, key = await _tenant_with_a_consultation(bus, pool)
    plan = f"whatif-{secrets.token_hex(3)}"
    path = tmp_path / "whatif.json"
    path.write_text(
        json.dumps(
            {
                "plan": plan,
                "effective_from": "2030-01-01T00:00:00Z",
                "prices": {
                    "participant_time": {"cents": 6, "per": 60_000},
                    "egress_time": {"cents": 20, "per": 60_000},
                },
            }
        )
    )
    code, _, err = await mediai(settings, "billing", "prices", "publish", str(path))
    assert code == 0, err
    async with client(stack, key) as http:
        response = await http.post(
            "/v1/audits", json={**MARCH, "pricePlan": plan, "priceVersion": 1}
        )
        missing = await http.post(
            "/v1/audits", json={**MARCH, "pricePlan": plan, "priceVersion": 9}
        )
    report = response.json()
    # 315000 ms × 6 / 60000 = 31.5 → 32; 120000 ms × 20 / 60000 = 40; nothing else is priced.
    assert (report["mode"], report["priceBook"]) == ("what_if", f"{plan}@1")
    assert report["replayedCents"] == 72 and report["liveCents"] == 72
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "price_book_not_found"


async def test_the_full_rebuild_restores_a_tampered_projection_and_live_consumption_resumes(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant, key = await _tenant_with_a_consultation(bus, pool)
    await pool.execute(
        "DELETE FROM billing.usage WHERE tenant = $1 AND meter = 'egress_time'", tenant
    )
    await pool.execute(
        "UPDATE billing.usage SET quantity = 1 WHERE tenant = $1 AND meter = 'llm_prompt_tokens'",
        tenant,
    )
    code, out, err = await mediai(settings, "billing", "rebuild")
    assert code == 0, err
    assert out.startswith("rebuilt from ") and "events/s" in out
    day = "2001-03-10"
    async with client(stack, key) as http:
        assert await usage_totals(http, day, day) == script.TOTALS
        assert (await http.post("/v1/audits", json=MARCH)).json()["matches"] is True
        # The live consumer carries on after the rebuild, counting each event once.
        extra = script.envelopes(
            tenant, [script._usage("13:10:00", "13:10:15", llm_prompt_tokens=11)]
        )
        await publish(bus, extra)
        await caught_up(bus)
        totals = await usage_totals(http, day, day)
    assert totals["llm_prompt_tokens"] == script.TOTALS["llm_prompt_tokens"] + 11
