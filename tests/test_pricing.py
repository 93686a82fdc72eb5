"""One price truth: the price book's rules, the scheduler deciding and stamping placements
with them, the price cap honoured, and a placement's price equal to what billing charges."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from tests.samples import T0
from tests.test_scheduler_core import GIB, kinds, request

import tessera.schemas as s
from tessera.billing.state import BillingState
from tessera.pricing.agreements import parse_agreements
from tessera.pricing.book import PriceBook, PricedResource, Standing
from tessera.scheduler.core import Scheduler

T0_US = int(T0.timestamp() * 1_000_000)
UNIT = {"partner": "do", "currency": "USD", "rates": {"vcpu_hour": "0.018", "memory_gib_hour": "0.0045"}}


def vm(provider="do", vcpu=4.0, gib=8.0, list_price="0.071", instance_type="s-4vcpu-8gb"):
    return PricedResource(provider, instance_type, vcpu, gib, 0.0, Decimal(list_price))


def test_a_unit_billed_partner_is_priced_by_its_agreement_not_its_catalog():
    book = PriceBook(parse_agreements([UNIT]))
    # the demo's s-4vcpu-8gb: catalog 0.071/h, but the agreement bills 4 x 0.018 + 8 x 0.0045
    assert book.opening_price(vm(), T0_US) == Decimal("0.108")
    assert book.replicas_price(vm(), (1.0, 2.0, 0.0), 2, T0_US) == Decimal("0.054")
    assert book.opening_price(vm(provider="nobody"), T0_US) == Decimal("0.071")   # no agreement: the list


def test_an_instance_rate_prices_the_whole_vm_and_replicas_take_their_share():
    book = PriceBook(parse_agreements([{**UNIT, "rates": {"instance_hour": {"s-4vcpu-8gb": "0.06"}}}]))
    assert book.opening_price(vm(), T0_US) == Decimal("0.06")
    assert book.replicas_price(vm(), (1.0, 2.0, 0.0), 2, T0_US) == Decimal("0.03")


def test_an_unmet_commitment_makes_opening_free_until_it_is_met():
    book = PriceBook(parse_agreements([{**UNIT, "monthly_commit": "10.00"}]))
    assert book.opening_price(vm(), T0_US) == 0
    assert book.replicas_price(vm(), (1.0, 2.0, 0.0), 1, T0_US) == Decimal("0.027"), "the bill still shows usage"
    book.set_standing("do", Standing(f"{T0.year:04d}-{T0.month:02d}", spend_micro=10_000_000))
    assert book.opening_price(vm(), T0_US) == Decimal("0.108")


def test_graduated_tiers_price_at_the_partners_month_to_date_position():
    tiers = {**UNIT, "tiers": {"vcpu_hour": [{"from": "0", "rate": "0.018"}, {"from": "100", "rate": "0.010"}]}}
    book = PriceBook(parse_agreements([tiers]))
    period = f"{T0.year:04d}-{T0.month:02d}"
    book.set_standing("do", Standing(period, units={"vcpu_hour": 150 * 3_600_000_000_000}))
    assert book.opening_price(vm(), T0_US) == Decimal("0.076")      # 4 x 0.010 + 8 x 0.0045
    # next month the position starts again
    assert book.opening_price(vm(), T0_US + 40 * 86_400_000_000) == Decimal("0.108")


def test_own_capacity_decides_at_its_marginal_cost_and_reports_the_full_cost():
    own = PricedResource("own", "node", 8.0, 32.0, 0.0, Decimal("0.49"), Decimal("0.15"))
    book = PriceBook()
    assert book.opening_price(own, T0_US) == Decimal("0.15")
    assert book.replicas_price(own, (2.0, 4.0, 0.0), 1, T0_US) == Decimal("0.1225")


def test_terms_that_change_mid_month_price_from_their_effective_time():
    later = {**UNIT, "rates": {"vcpu_hour": "0.010"}, "effective_from": (T0 + timedelta(days=1)).isoformat()}
    book = PriceBook(parse_agreements([UNIT, later]))
    assert book.opening_price(vm(), T0_US) == Decimal("0.108")
    assert book.opening_price(vm(), T0_US + 2 * 86_400_000_000) == Decimal("0.04")


def test_a_remembered_replicas_price_follows_standings_terms_and_months():
    """``replicas_price`` remembers its answers (asked for every placement); each change of
    what prices depend on gives the price worked out afresh."""
    tiers = {**UNIT, "tiers": {"vcpu_hour": [{"from": "0", "rate": "0.018"}, {"from": "100", "rate": "0.010"}]}}
    later = {**UNIT, "rates": {"vcpu_hour": "0.030"}, "effective_from": (T0 + timedelta(days=1)).isoformat()}
    book = PriceBook(parse_agreements([tiers]))
    period, offer = f"{T0.year:04d}-{T0.month:02d}", vm()

    def price(t_us=T0_US):
        remembered = book.replicas_price(offer, (1.0, 2.0, 0.0), 2, t_us)
        assert remembered == book.replicas_price(offer, (1.0, 2.0, 0.0), 2, t_us)
        assert remembered == book._replicas_price(offer, (1.0, 2.0, 0.0), 2, t_us)
        return remembered

    assert price() == Decimal("0.054")
    book.set_standing("do", Standing(period, units={"vcpu_hour": 150 * 3_600_000_000_000}))
    assert price() == Decimal("0.038")                               # past the tier
    assert price(T0_US + 40 * 86_400_000_000) == Decimal("0.054")    # next month starts again
    book.set_agreement(parse_agreements([later])["do"])
    assert price() == Decimal("0.038") and price(T0_US + 2 * 86_400_000_000) == Decimal("0.06")
    # a new offer object never takes another's remembered price, even with the same id
    assert book.replicas_price(vm(list_price="0.5", provider="nobody"), (4.0, 8.0, 0.0), 1, T0_US) == Decimal("0.5")


def partner_vm(i, provider="do", vcpu=4.0, gib=8, list_price="0.071"):
    spec = s.ResourceSpec(provider=provider, region="eu", instance_type="s-4vcpu-8gb",
                          capacity=s.Capacity(vcpu=vcpu, memory_bytes=gib * GIB), price_per_hour=Decimal(list_price))
    return s.ResourceDiscovered(resource_id=f"{provider}/vm{i}", spec=spec)


def test_the_scheduler_places_where_the_agreement_says_it_is_cheaper_and_stamps_that_price():
    # catalogs: do 0.071 < gcp 0.09; agreements: do bills 0.108, gcp has an instance rate 0.09
    sch = Scheduler(prices=PriceBook(parse_agreements([
        UNIT, {"partner": "gcp", "currency": "USD", "rates": {"instance_hour": {"s-4vcpu-8gb": "0.09"}}}])))
    sch.apply(partner_vm(0, "do"))
    sch.apply(partner_vm(1, "gcp", list_price="0.09"))
    sch.submit(request("a", vcpu=4.0, mem_gib=8), 0.0, T0)
    placed = [e for e in sch.run_batch(0.0, T0) if isinstance(e, s.AllocationPlaced)]
    assert [(p.provider, p.price_per_hour) for p in placed[0].placements] == [("gcp", Decimal("0.09"))]


def test_a_placement_value_is_reused_only_while_it_says_the_same():
    """Placements repeat (same replicas, resource, price): the scheduler builds each value
    once; a change of standing that moves the price gives the next placement a new one."""
    tiers = {**UNIT, "tiers": {"vcpu_hour": [{"from": "0", "rate": "0.018"}, {"from": "100", "rate": "0.010"}]}}
    sch = Scheduler(prices=PriceBook(parse_agreements([tiers])))
    sch.reprice(T0_US)
    sch.apply(partner_vm(0))

    def place(rid):
        sch.submit(request(rid, vcpu=1.0, mem_gib=2), 0.0, T0)
        (placed,) = [e for e in sch.run_batch(0.0, T0) if isinstance(e, s.AllocationPlaced)]
        return placed.placements[0]

    a, b = place("a"), place("b")
    assert a is b and a.price_per_hour == Decimal("0.027")
    sch.prices.set_standing("do", Standing(f"{T0.year:04d}-{T0.month:02d}",
                                           units={"vcpu_hour": 150 * 3_600_000_000_000}))
    c = place("c")
    assert c.price_per_hour == Decimal("0.019") and a.price_per_hour == Decimal("0.027")
    assert c.model_dump() == s.Placement(**c.model_dump()).model_dump()     # as validation builds it


def test_max_price_per_hour_is_honoured_or_refused_with_its_code():
    sch = Scheduler(prices=PriceBook(parse_agreements([UNIT])))
    sch.apply(partner_vm(0))                                     # 1 vCPU + 2 GiB there = 0.027/h
    cheap = request("cheap", vcpu=1.0, mem_gib=2).model_copy(update={"max_price_per_hour": Decimal("0.01")})
    fine = request("fine", vcpu=1.0, mem_gib=2).model_copy(update={"max_price_per_hour": Decimal("0.03")})
    for r in (cheap, fine):
        sch.submit(r, 0.0, T0)
    out = sch.run_batch(0.0, T0)
    assert ("allocation.placed", "fine") in kinds(out)
    rejected = [e for e in out if isinstance(e, s.AllocationRejected)]
    assert [(e.request_id, e.code) for e in rejected] == [("cheap", s.RejectReason.over_price_cap)]


def test_a_capped_request_that_fits_only_later_waits():
    sch = Scheduler(prices=PriceBook(parse_agreements([UNIT])))
    sch.apply(partner_vm(0))
    sch.submit(request("big", vcpu=4.0, mem_gib=8), 0.0, T0)
    sch.run_batch(0.0, T0)
    capped = request("capped", vcpu=1.0, mem_gib=2).model_copy(update={"max_price_per_hour": Decimal("0.03")})
    sch.submit(capped, 1.0, T0)
    assert [e.event_type for e in sch.run_batch(1.0, T0)] == ["allocation.queued"]
    sch.release("alloc:big")
    assert kinds(sch.run_batch(2.0, T0)) == [("allocation.placed", "capped")]


def test_a_placements_price_times_its_hours_is_what_billing_charges_to_the_cent():
    agreements = parse_agreements([UNIT])
    sch = Scheduler(prices=PriceBook(dict(agreements)))
    for i in range(3):
        sch.apply(partner_vm(i))
    billing = BillingState(dict(agreements))
    expected = Decimal(0)
    for i, (vcpu, gib, replicas, hours) in enumerate([(1.0, 2, 3, 5), (0.5, 1, 2, 7), (2.0, 3, 1, 11)]):
        sch.submit(request(f"r{i}", vcpu=vcpu, mem_gib=gib, replicas=replicas), 0.0, T0)
        placed = [e for e in sch.run_batch(0.0, T0) if isinstance(e, s.AllocationPlaced)][0]
        billing.apply(placed.model_copy(update={"event_time": T0}))
        expected += sum(p.price_per_hour for p in placed.placements) * hours
        (released,) = sch.release(placed.allocation_id)
        billing.apply(released.model_copy(update={"event_time": T0 + timedelta(hours=hours)}))
    inv = billing.ledger.invoice("do", f"{T0.year:04d}-{T0.month:02d}")
    assert Decimal(inv.total) == expected.quantize(Decimal("0.01"))


def test_billing_lines_move_the_schedulers_view_of_a_commitment():
    sch = Scheduler(prices=PriceBook(parse_agreements([{**UNIT, "monthly_commit": "1.00"}])))
    sch.reprice(T0_US)
    sch.apply(partner_vm(0))
    assert sch.resources["do/vm0"].price == 0
    period_start = T0.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    sch.apply(s.BillingLine(line_id="do/x/vcpu_hour", partner_id="do", period_start=period_start,
                            period_end=period_start + timedelta(days=28), sku="vcpu_hour", unit="vcpu_hour",
                            quantity=Decimal(60), rate=Decimal("0.018"), amount=Decimal("1.08"), revision=1))
    assert sch.resources["do/vm0"].price == Decimal("0.108")


def test_a_partner_billing_per_instance_hour_is_paid_for_the_whole_vm_while_it_holds_work():
    agreements = parse_agreements([{**UNIT, "rates": {"vcpu_hour": "0.018", "instance_hour": {"s-4vcpu-8gb": "0.06"}}}])
    sch = Scheduler(prices=PriceBook(dict(agreements)))
    sch.apply(partner_vm(0))
    billing = BillingState(dict(agreements))
    placed = {}
    for rid, at in (("a", 0), ("b", 1)):
        sch.submit(request(rid, vcpu=1.0, mem_gib=2), 0.0, T0)
        (p,) = [e for e in sch.run_batch(0.0, T0) if isinstance(e, s.AllocationPlaced)]
        assert p.placements[0].instance_type == "s-4vcpu-8gb"
        assert p.placements[0].price_per_hour == Decimal("0.015"), "a quarter of the VM's 0.06"
        billing.apply(p.model_copy(update={"event_time": T0 + timedelta(hours=at)}))
        placed[rid] = p
    for rid, at in (("a", 2), ("b", 3)):
        (released,) = sch.release(placed[rid].allocation_id)
        billing.apply(released.model_copy(update={"event_time": T0 + timedelta(hours=at)}))
    inv = billing.ledger.invoice("do", f"{T0.year:04d}-{T0.month:02d}")
    # the VM was open from the first placement to the last release: 3 h x 0.06, no vCPU-hours
    assert [(l.sku, inv.money(l.amount_minor)) for l in inv.lines] == [("instance_hour:s-4vcpu-8gb", "0.18")]
