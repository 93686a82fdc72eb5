"""Usage from the allocation lifecycle: migrations move billing between partners at the
right instants, partners on measured use are billed from usage samples, and replays or
redeliveries change nothing. Hand-computed amounts; the rating itself is tested in
test_billing.py."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

import tessera.schemas as s
from tessera.billing.state import BillingState
from tessera.pricing.agreements import AgreementError, parse_agreements

T = datetime(2026, 3, 10, tzinfo=timezone.utc)
GIB = 1024 ** 3


def terms(**basis):
    return parse_agreements([
        {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"}, "basis": basis.get("gcp", "allocated")},
        {"partner": "do", "currency": "USD", "rates": {"vcpu_hour": "0.03", "memory_gib_hour": "0.01"},
         "basis": basis.get("do", "allocated")}])


def at(hours: float) -> datetime:
    return T + timedelta(hours=hours)


def placed(alloc="a1", provider="gcp", resource="gcp/n1", replicas=2, vcpu=1.0, hours=0.0, memory_gib=0):
    return s.AllocationPlaced(event_time=at(hours), request_id=f"q-{alloc}", allocation_id=alloc,
                              per_replica=s.Capacity(vcpu=vcpu, memory_bytes=memory_gib * GIB),
                              placements=[s.Placement(resource_id=resource, provider=provider, replicas=replicas,
                                                      price_per_hour=Decimal("0.1"))])


def released(alloc="a1", hours=10.0):
    return s.AllocationReleased(event_time=at(hours), request_id=f"q-{alloc}", allocation_id=alloc)


def migration(kind, hours, mid="m1", alloc="a1", source="gcp/n1", target="do/n9", provider="do", **extra):
    base = dict(event_time=at(hours), migration_id=mid, allocation_id=alloc, source_resource_id=source,
                target_resource_id=target, target_provider=provider)
    return kind(**base, **extra)


def bills(events, **basis) -> dict[str, str]:
    st = BillingState(terms(**basis))
    for e in events:
        st.apply(e)
    return {p: st.ledger.invoice(p, "2026-03").total for p in ("gcp", "do")}


def test_a_migration_bills_the_source_until_cut_over_and_the_target_from_its_reservation():
    events = [placed(),                                                     # 2 vCPU on gcp from 0 h
              migration(s.MigrationPlanned, 3, reason="consolidation"),
              migration(s.MigrationProgress, 4, step="reserve_target"),     # do holds 2 vCPU from 4 h
              migration(s.MigrationProgress, 4.5, step="sync"),
              migration(s.MigrationDone, 6, cut_over_at=at(6)),            # gcp stops at 6 h
              released(hours=10)]                                           # do stops at 10 h
    # gcp: 2 vCPU x 6 h x 0.04 = 0.48 ; do: 2 vCPU x 6 h x 0.03 = 0.36 (4 h of them overlap gcp)
    assert bills(events) == {"gcp": "0.48", "do": "0.36"}


def test_a_migration_from_own_capacity_starts_the_partner_bill_at_cut_over():
    events = [placed(provider="own", resource="own/n1"),
              migration(s.MigrationDone, 5, source="own/n1", cut_over_at=at(5)),
              released(hours=8)]
    assert bills(events) == {"gcp": "0.00", "do": "0.18"}            # 2 x 3 h x 0.03


def test_a_migration_to_an_unknown_partner_still_ends_the_source_bill():
    st = BillingState(terms())
    for e in [placed(), migration(s.MigrationDone, 4, target="x/n1", provider="", cut_over_at=at(4)),
              released(hours=10)]:
        st.apply(e)
    assert st.ledger.invoice("gcp", "2026-03").total == "0.32"        # 2 x 4 h x 0.04, not 10 h
    assert st.lifecycle.unknown_migrations == 1


def test_a_failed_migration_bills_the_held_target_and_leaves_the_source_running():
    events = [placed(),
              migration(s.MigrationProgress, 2, step="reserve_target"),
              migration(s.MigrationFailed, 3, reason="target unhealthy"),   # do held 1 h
              released(hours=10)]
    assert bills(events) == {"gcp": "0.80", "do": "0.06"}


def test_replayed_and_redelivered_lifecycle_events_change_no_bill():
    events = [placed(), migration(s.MigrationProgress, 4, step="reserve_target"),
              migration(s.MigrationDone, 6, cut_over_at=at(6)), released(hours=10),
              placed("a2", replicas=1, hours=1), released("a2", hours=3)]
    expected = bills(events)
    rng = random.Random(7)
    for _ in range(20):
        dup = events + [rng.choice(events) for _ in range(6)]
        # A redelivery comes after the original; keep each event's first copy in place.
        assert bills(dup) == expected
    assert bills(events + events) == expected
    # A placement redelivered after its release does not reopen it (no month-to-date drift).
    st = BillingState(terms())
    for e in [*events, placed()]:
        st.apply(e)
    assert st.lifecycle.provisional() == []


def test_the_month_to_date_view_follows_open_segments_across_a_migration():
    st = BillingState(terms())
    for e in [placed(), migration(s.MigrationDone, 5, cut_over_at=at(5)), placed("a2", hours=7, replicas=1)]:
        st.apply(e)
    view = st.view()              # watermark 7 h: gcp 2x5 h final + 1x0 h open; do 2x2 h open
    assert view.invoice("gcp", "2026-03").total == "0.40"
    assert view.invoice("do", "2026-03").total == "0.12"


def test_a_measured_partner_is_billed_on_samples_not_on_reservations():
    def sample(eid, hours, vcpu, allocation="a1", resource="do/n1", provider="", interval_h=1.0):
        return s.UsageSample(event_id=eid, event_time=at(hours), resource_id=resource, allocation_id=allocation,
                             provider=provider, interval_seconds=interval_h * 3600,
                             used=s.Capacity(vcpu=vcpu, memory_bytes=2 * GIB))

    events = [placed(provider="do", resource="do/n1", replicas=4, vcpu=2),   # reserves 8 vCPU: not billed
              sample("s1", 1, 1.5), sample("s2", 2, 2.25),                   # provider learned from placement
              sample("s3", 3, 0.5, resource="do/n7", provider="do", allocation="a9"),
              sample("s2", 2, 2.25),                                          # duplicate
              sample("whole", 3, 6.0, allocation=""),                         # whole resource: not billed
              sample("gcp-s", 3, 1.0, resource="gcp/n1", provider="gcp"),     # gcp bills reservations
              released(hours=5)]
    # do: vCPU (1.5 + 2.25 + 0.5) h x 0.03 = 0.1275 ; memory 3 x 2 GiB-h x 0.01 = 0.06 -> 0.1875
    assert bills(events, do="measured") == {"gcp": "0.00", "do": "0.19"}
    st = BillingState(terms(do="measured"))
    for e in events[:1]:
        st.apply(e)
    assert st.view().invoice("do", "2026-03").total == "0.00"        # reservations are not provisional usage


def test_a_sample_across_midnight_at_month_end_is_split_into_both_periods():
    st = BillingState(terms(do="measured"))
    st.apply(s.UsageSample(event_time=datetime(2026, 4, 1, 1, tzinfo=timezone.utc), resource_id="do/n1",
                           allocation_id="a1", provider="do", interval_seconds=3 * 3600, used=s.Capacity(vcpu=10)))
    assert st.ledger.invoice("do", "2026-03").total == "0.60"         # 10 x 2 h x 0.03
    assert st.ledger.invoice("do", "2026-04").total == "0.30"


def test_an_unknown_basis_is_refused_naming_the_field():
    with pytest.raises(AgreementError, match=r"agreement\[do\]\.basis"):
        parse_agreements([{"partner": "do", "currency": "USD", "rates": {"vcpu_hour": "1"}, "basis": "vibes"}])


def test_a_partial_migration_moves_only_its_replicas():
    # 2 replicas on gcp; one moves to do at 5 h (reserved at 4 h); release at 10 h.
    events = [placed(), migration(s.MigrationProgress, 4, step="reserve_target", replicas=1),
              migration(s.MigrationDone, 5, cut_over_at=at(5), replicas=1), released()]
    # gcp: 2 vCPU x 5 h + 1 vCPU x 5 h = 15 vCPU-h x 0.04; do: 1 vCPU x 6 h x 0.03
    assert bills(events) == {"gcp": "0.60", "do": "0.18"}
    assert bills(events + events) == {"gcp": "0.60", "do": "0.18"}    # redelivered: the same


def test_a_shortfall_the_usage_came_to_cover_is_published_again_at_zero():
    st = BillingState(parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"},
                                         "monthly_commit": "1.00"}]))
    touched = st.apply(placed(replicas=1, hours=0))
    first = {l.line_id: l for l in st.outputs(touched) if l.event_type == "billing.line"}
    assert any(l.charge_category == "commitment_shortfall" and l.amount > 0 for l in first.values())
    touched = st.apply(released(hours=40))                       # 1 vCPU x 40 h x 0.04 = 1.60 > 1.00
    second = {l.line_id: l for l in st.outputs(touched) if l.event_type == "billing.line"}
    shortfall = [l for l in second.values() if l.charge_category == "commitment_shortfall"]
    assert shortfall and shortfall[0].amount == 0 and shortfall[0].revision == 2
    # After a restart the revisions continue above what was published.
    again = BillingState(st.agreements)
    for line in second.values():
        again.remember_line(line)
    again.apply(placed(replicas=1, hours=0))
    third = [l for l in again.outputs(again.apply(released(hours=40))) if l.event_type == "billing.line"]
    assert min(l.revision for l in third) == 3
