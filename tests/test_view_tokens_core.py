"""View tokens without infrastructure: signed, expiring, scoped, bound, only ever narrowed."""

from __future__ import annotations

import msgspec
import pytest

from shared import viewtokens
from shared.viewtokens import (
    Grant,
    ViewForbiddenError,
    ViewTokenError,
    check_dispatch,
    check_route,
    issue,
    narrowed,
    new_grant,
    verify,
    view_scope,
)

SECRET = "test-view-token-secret-0123456789abcdef"
NOW = 1_800_000_000


def clinic(personal: bool = False, ttl: int = 900) -> Grant:
    return new_grant(
        tenant="t1", tenant_name="Clínica", view="clinic", now=NOW, ttl=ttl, personal=personal
    )


def doctor() -> Grant:
    return new_grant(
        tenant="t1",
        tenant_name="Clínica",
        view="doctor",
        now=NOW,
        ttl=900,
        dispatch="d-1",
        room="consulta-1",
    )


def test_a_token_carries_its_grant_until_it_expires() -> None:
    grant = doctor()
    token = issue(grant, SECRET)
    assert token.startswith("mv1.")
    assert verify(token, SECRET, now=NOW + 899) == grant
    with pytest.raises(ViewTokenError, match="expired"):
        verify(token, SECRET, now=NOW + 900)


def test_a_forged_or_altered_token_is_refused() -> None:
    token = issue(clinic(), SECRET)
    with pytest.raises(ViewTokenError, match="invalid"):
        verify(token, "another-secret-0123456789abcdef0123", now=NOW)
    # Claims rewritten to read personal data, signature kept: no longer ours.
    bigger = msgspec.structs.replace(clinic(), personal=True)
    payload = issue(bigger, SECRET).split(".")[1]
    head, _, signature = token.rpartition(".")
    with pytest.raises(ViewTokenError, match="invalid"):
        verify(f"mv1.{payload}.{signature}", SECRET, now=NOW)
    for junk in ("mv1.", "mv1.abc", "mk_abc", f"{head}."):
        with pytest.raises(ViewTokenError):
            verify(junk, SECRET, now=NOW)


def test_a_doctors_view_is_bound_to_one_consultation_and_dispatches_only_a_copilot() -> None:
    grant = doctor()
    assert set(grant.scopes) == {"sessions:read", "anamnesis:read", "agents:dispatch"}
    assert grant.personal
    opt = view_scope("anamnesis:read", personal=True, dispatch_id="dispatch")
    check_route(grant, opt, {"dispatch_id": "d-1"})
    with pytest.raises(ViewForbiddenError, match="another dispatch"):
        check_route(grant, opt, {"dispatch_id": "d-2"})
    with pytest.raises(ViewForbiddenError, match="lacks the scope usage:read"):
        check_route(grant, view_scope("usage:read"), {})
    check_dispatch(grant, room="consulta-1", role="copilot")
    with pytest.raises(ViewForbiddenError, match="only: copilot"):
        check_dispatch(grant, room="consulta-1", role="intake")
    with pytest.raises(ViewForbiddenError, match="its own room"):
        check_dispatch(grant, room="consulta-2", role="copilot")
    with pytest.raises(ViewForbiddenError, match="bound to a consultation"):
        new_grant(tenant="t1", tenant_name="C", view="doctor", now=NOW, ttl=60)


def test_routes_opt_in_and_personal_routes_need_a_personal_grant() -> None:
    with pytest.raises(ViewForbiddenError, match="takes an API key"):
        check_route(clinic(), {}, {})
    personal_route = view_scope("anamnesis:read", personal=True)
    with pytest.raises(ViewForbiddenError, match="personal"):
        check_route(clinic(personal=False), personal_route, {})
    check_route(clinic(personal=True), personal_route, {})
    # An unbound clinic grant reads any consultation of its tenant.
    check_route(clinic(True), view_scope("sessions:read", session_id="dispatch"), {"x": 1})
    check_dispatch(clinic(), room="any-room", role="intake")
    with pytest.raises(ValueError, match="unknown view scope"):
        view_scope("everything")


def test_a_view_only_ever_hands_out_narrower_views() -> None:
    parent = clinic(personal=True, ttl=300)
    child = narrowed(parent, doctor())
    assert child.expires_at == parent.expires_at  # never outlives who handed it out
    # A doctor reads a consultation's personal data: a view without it cannot hand that out.
    for wider in (doctor(), clinic(personal=True)):
        with pytest.raises(ViewForbiddenError, match="personal"):
            narrowed(clinic(personal=False), wider)
    with pytest.raises(ViewForbiddenError, match="cannot hand out"):
        narrowed(doctor(), doctor())
    smaller = msgspec.structs.replace(parent, scopes=("sessions:read",))
    with pytest.raises(ViewForbiddenError, match="lacks the scopes"):
        narrowed(smaller, clinic())
    full = clinic(True)
    assert narrowed(None, full) is full  # an API key hands out any view
    assert viewtokens.may_read_personal(None)
    assert not viewtokens.may_read_personal(clinic(personal=False))
