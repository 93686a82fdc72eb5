"""The rating engine: hand-computed invoices, exactness under any split, replays,
limits and alerts, and errors that name the field."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tessera.app.cli.main import main
from tessera.billing.export import FOCUS_COLUMNS, focus_rows, invoice_json
from tessera.billing.ledger import Ledger, SeenOverlay
from tessera.billing.usage import UsageError, parse_usage
from tessera.pricing.agreements import AgreementError, parse_agreements
from tessera.schemas import UsageLimitAlert


def agreements(**extra):
    base = {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04", "memory_gib_hour": "0.005",
                                                            "gpu_hour": "2.50"}}
    base.update(extra)
    return parse_agreements([base, {"partner": "sakura", "currency": "JPY", "rates": {"vcpu_hour": "4.4"}}])


def usage(eid, start, end, partner="gcp", alloc="a1", res="gcp/r1", **q):
    return parse_usage({"event_id": eid, "partner": partner, "allocation_id": alloc, "resource_id": res,
                        "start": start, "end": end, **q})


def test_graduated_tiers_split_at_the_boundary():
    led = Ledger(agreements(tiers={"vcpu_hour": [{"from": "0", "rate": "0.04"}, {"from": "100", "rate": "0.03"},
                                                 {"from": "200", "rate": "0.02"}]}))
    # 10 vCPU for 25 h = 250 vCPU-hours: 100 @ 0.04 + 100 @ 0.03 + 50 @ 0.02 = 4 + 3 + 1 = 8.00
    led.add(usage("u1", "2026-03-01T00:00:00Z", "2026-03-02T01:00:00Z", vcpu=10))
    inv = led.invoice("gcp", "2026-03")
    assert [(l.sku, str(l.quantity), inv.money(l.amount_minor)) for l in inv.lines] == [
        ("vcpu_hour/tier1", "100.000000000", "4.00"), ("vcpu_hour/tier2", "100.000000000", "3.00"),
        ("vcpu_hour/tier3", "50.000000000", "1.00")]
    assert inv.total == "8.00"


def test_commitment_shortfall_brings_the_bill_up_to_the_commitment():
    led = Ledger(agreements(monthly_commit="100.00"))
    led.add(usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T10:00:00Z", vcpu=4))   # 40 h x 0.04 = 1.60
    inv = led.invoice("gcp", "2026-03")
    assert [(l.charge_category, inv.money(l.amount_minor)) for l in inv.lines] == [
        ("usage", "1.60"), ("commitment_shortfall", "98.40")]
    assert inv.total == "100.00"


def test_usage_spanning_two_months_is_split_at_midnight_utc():
    led = Ledger(agreements())
    led.add(usage("u1", "2026-01-31T22:00:00Z", "2026-02-01T03:00:00Z", gpu=1))    # 2 h + 3 h
    assert led.invoice("gcp", "2026-01").total == "5.00"
    assert led.invoice("gcp", "2026-02").total == "7.50"


def test_duplicates_count_once():
    led = Ledger(agreements())
    rec = usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", vcpu=1)
    assert led.add(rec) and not led.add(rec)
    assert led.invoice("gcp", "2026-03").total == "0.04"


def test_a_view_over_a_ledger_dedupes_against_it_and_leaves_it_as_it_was():
    led = Ledger(agreements())
    rated = usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", vcpu=1)
    led.add(rated)
    view = Ledger(agreements(), seen=SeenOverlay(led.seen), cells={k: list(v) for k, v in led.cells.items()})
    running = usage("u2", "2026-03-01T00:00:00Z", "2026-03-01T02:00:00Z", vcpu=1)
    assert not view.add(rated), "already rated by the ledger underneath"
    assert view.add(running) and not view.add(running)
    assert view.invoice("gcp", "2026-03").total == "0.12"
    assert set(led.seen) == {"u1"} and led.invoice("gcp", "2026-03").total == "0.04"


def test_late_usage_after_the_period_closed_is_an_adjustment_in_the_next():
    led = Ledger(agreements())
    led.add(usage("u1", "2026-03-31T00:00:00Z", "2026-03-31T10:00:00Z", vcpu=1))
    led.close_period("gcp", "2026-03")
    led.add(usage("u2", "2026-03-30T00:00:00Z", "2026-03-30T05:00:00Z", vcpu=2))    # late: 10 h
    assert led.invoice("gcp", "2026-03").total == "0.40"                          # unchanged
    april = led.invoice("gcp", "2026-04")
    (line,) = april.lines
    assert (line.charge_category, line.adjusts, april.total) == ("adjustment", "2026-03", "0.40")
    assert line.line_id == "gcp/2026-04/vcpu_hour/adj-2026-03"


def test_two_currencies_round_to_their_own_minor_unit():
    led = Ledger(agreements())
    # 1 vCPU for 20 minutes: 0.04/3 USD = 0.0133.. -> 0.01 ; 4.4/3 JPY = 1.466.. -> 1 yen
    led.add(usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T00:20:00Z", vcpu=1))
    led.add(usage("u2", "2026-03-01T00:00:00Z", "2026-03-01T00:20:00Z", partner="sakura", res="sk/1", vcpu=1))
    assert led.invoice("gcp", "2026-03").total == "0.01"
    yen = led.invoice("sakura", "2026-03")
    assert (yen.currency, yen.total) == ("JPY", "1")
    # Half-up: 4.4 yen x 75 min / 60 = 5.5 -> 6
    led.add(usage("u3", "2026-03-02T00:00:00Z", "2026-03-02T01:15:00Z", partner="sakura", res="sk/1", vcpu=1))
    assert led.invoice("sakura", "2026-03").total == "7"   # 1.4666 + 5.5 = 6.9666 -> 7


records = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 60 * 24 * 40), st.integers(1, 60 * 24 * 3),
              st.integers(0, 16000), st.integers(0, 64000), st.integers(0, 2)),
    min_size=1, max_size=40)


def _records(raw):
    from datetime import datetime, timedelta, timezone
    t0 = datetime(2026, 1, 20, tzinfo=timezone.utc)
    out = []
    for i, (alloc, start_min, dur_min, vcpu_milli, mem_milli, gpu) in enumerate(raw):
        s = t0 + timedelta(minutes=start_min, seconds=i)
        out.append(usage(f"u{i}", s.isoformat(), (s + timedelta(minutes=dur_min)).isoformat(), alloc=f"a{alloc}",
                         res=f"gcp/r{alloc % 3}", vcpu=vcpu_milli / 1000, memory_gib=mem_milli / 1000, gpu=gpu))
    return out


@hsettings(max_examples=60, deadline=None)
@given(records)
def test_sum_over_allocations_equals_the_invoice_and_replays_change_nothing(raw):
    recs = _records(raw)
    whole = Ledger(agreements())
    whole.add_all(recs)
    for partner, period in whole.periods("gcp"):
        inv = whole.invoice(partner, period)
        per_alloc = 0
        for alloc in {r.allocation_id for r in recs}:
            part = Ledger(agreements())
            part.add_all(r for r in recs if r.allocation_id == alloc)
            per_alloc += part.invoice(partner, period).exact_numerator
        assert per_alloc == inv.exact_numerator                     # exact, no rounding drift
        assert inv.total_minor == sum(l.amount_minor for l in inv.lines)
        rows = focus_rows(whole, inv, whole.agreements["gcp"])
        assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal(inv.total)
    # Replay everything (duplicates) and a 'restart': a new ledger fed the same stream twice.
    again = Ledger(agreements())
    again.add_all(recs[: len(recs) // 2])
    again.add_all(recs)
    again.add_all(recs)
    for partner, period in whole.periods():
        assert again.invoice(partner, period).total == whole.invoice(partner, period).total


def test_each_threshold_alerts_once_and_a_hard_limit_blocks_the_partner():
    led = Ledger(agreements(limits={"spend": {"amount": "10.00", "thresholds": [50, 80, 100],
                                              "enforcement": "hard"},
                                    "vcpu_hour": {"amount": "1000", "thresholds": [90]}}))
    led.add(usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T10:00:00Z", vcpu=15))    # 6.00 spend
    first = led.check_limits("gcp", "2026-03")
    assert [(a.limit_name, a.threshold_pct, a.enforcement) for a in first] == [("spend", 50, "soft")]
    assert led.check_limits("gcp", "2026-03") == []                                # no storm
    led.add(usage("u2", "2026-03-02T00:00:00Z", "2026-03-02T10:00:00Z", vcpu=15))    # 12.00 spend
    second = led.check_limits("gcp", "2026-03")
    assert [(a.threshold_pct, a.enforcement) for a in second] == [(80, "soft"), (100, "hard")]
    assert second[-1].used == Decimal("12.000000") and led.blocked == {"gcp": "2026-03"}
    assert led.check_limits("gcp", "2026-03") == []


@pytest.mark.parametrize("doc, field", [
    ({"partner": "x", "currency": "usd", "rates": {"vcpu_hour": "1"}}, "currency"),
    ({"partner": "x", "currency": "USD", "rates": {"vcpu_hour": 0.031}}, "rates.vcpu_hour"),
    ({"partner": "x", "currency": "USD", "rates": {"vcpu_hour": "0.0000001"}}, "rates.vcpu_hour"),
    ({"partner": "x", "currency": "USD", "rates": {"cpu": "1"}}, "rates.cpu"),
    ({"partner": "x", "currency": "USD", "rates": {"vcpu_hour": "1"},
      "tiers": {"vcpu_hour": [{"from": "5", "rate": "1"}]}}, "tiers.vcpu_hour[0].from"),
    ({"partner": "x", "currency": "USD", "rates": {"vcpu_hour": "1"},
      "limits": {"spend": {"amount": "5", "enforcement": "strict"}}}, "limits.spend.enforcement"),
    ({"currency": "USD", "rates": {}}, "partner"),
])
def test_malformed_agreements_name_the_field(doc, field):
    with pytest.raises(AgreementError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_agreements([doc])


@pytest.mark.parametrize("change, field", [
    ({"start": "2026-03-01T00:00:00"}, "start"), ({"end": "yesterday"}, "end"),
    ({"vcpu": -1}, "vcpu"), ({"vcpu": 0.0001}, "vcpu"), ({"partner": ""}, "partner"),
    ({"end": "2026-02-01T00:00:00Z"}, "end"),
])
def test_malformed_usage_names_the_field(change, field):
    doc = {"event_id": "u", "partner": "gcp", "allocation_id": "a", "resource_id": "r",
           "start": "2026-03-01T00:00:00Z", "end": "2026-03-01T01:00:00Z", "vcpu": 1}
    doc.update(change)
    with pytest.raises(UsageError, match=rf"\.{field}:"):
        parse_usage(doc)


def test_usage_for_an_unknown_partner_is_refused():
    with pytest.raises(UsageError, match="no agreement for partner 'nope'"):
        Ledger(agreements()).add(usage("u", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", partner="nope", vcpu=1))


def test_bill_cli_invoice_and_focus(tmp_path, capsys):
    agr = tmp_path / "agr.json"
    agr.write_bytes(orjson.dumps([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"},
                                   "monthly_commit": "1.00"}]))
    use = tmp_path / "usage.jsonl"
    use.write_bytes(b"\n".join(orjson.dumps(d) for d in [
        {"event_id": "u1", "partner": "gcp", "allocation_id": "a", "resource_id": "gcp/r1",
         "start": "2026-03-01T00:00:00Z", "end": "2026-03-01T05:00:00Z", "vcpu": 2, "memory_gib": 8, "gpu": 0},
        {"event_id": "u1", "partner": "gcp", "allocation_id": "a", "resource_id": "gcp/r1",
         "start": "2026-03-01T00:00:00Z", "end": "2026-03-01T05:00:00Z", "vcpu": 2, "memory_gib": 8, "gpu": 0}]))
    assert main(["bill", "--agreements", str(agr), "--usage", str(use), "--period", "2026-03"]) == 0
    (inv,) = orjson.loads(capsys.readouterr().out)
    assert inv["total"] == "1.00" and [l["amount"] for l in inv["lines"]] == ["0.40", "0.60"]
    out = tmp_path / "focus.csv"
    assert main(["bill", "--agreements", str(agr), "--usage", str(use), "--period", "2026-03",
                 "--format", "focus-csv", "--out", str(out)]) == 0
    header, *rows = out.read_text().splitlines()
    assert header.split(",") == FOCUS_COLUMNS and len(rows) == 2
    assert main(["bill", "--agreements", str(agr), "--usage", str(use), "--period", "March"]) == 2
    assert "YYYY-MM" in capsys.readouterr().err


def test_invoice_json_lines_add_up_to_the_total():
    led = Ledger(agreements())
    for i in range(7):
        led.add(usage(f"u{i}", "2026-03-01T00:00:00Z", f"2026-03-01T00:{10 + i * 7:02d}:00Z", vcpu=1.5,
                      memory_gib=3.25))
    doc = invoice_json(led.invoice("gcp", "2026-03"))
    assert sum(Decimal(l["amount"]) for l in doc["lines"]) == Decimal(doc["total"])


def test_live_state_closes_a_month_after_the_grace_period_and_adjusts_late_usage():
    import tessera.schemas as s
    from tessera.billing.state import BillingState

    def placed(i, at):
        return s.AllocationPlaced(event_time=at, request_id=f"q{i}", allocation_id=f"a{i}",
                                  per_replica=s.Capacity(vcpu=1),
                                  placements=[s.Placement(resource_id=f"gcp/n{i}", provider="gcp", replicas=1,
                                                          price_per_hour=Decimal("0.1"))])

    def released(i, at):
        return s.AllocationReleased(event_time=at, request_id=f"q{i}", allocation_id=f"a{i}")

    from datetime import datetime, timedelta, timezone
    march = datetime(2026, 3, 30, tzinfo=timezone.utc)
    st = BillingState(agreements(), grace_s=86400)
    for e in [placed(1, march), released(1, march + timedelta(hours=10)),   # March: 10 vCPU-h
              placed(2, march + timedelta(hours=1))]:                          # still running
        st.apply(e)
    st.apply(placed(3, datetime(2026, 4, 3, tzinfo=timezone.utc)))            # watermark: March closed
    st.apply(released(2, datetime(2026, 4, 3, 1, tzinfo=timezone.utc)))       # late for March
    assert st.ledger.invoice("gcp", "2026-03").total == "0.40"
    april = st.ledger.invoice("gcp", "2026-04")
    cats = {(l.charge_category, l.adjusts) for l in april.lines}
    assert ("adjustment", "2026-03") in cats and ("usage", "") in cats


def test_raising_a_hard_limit_lifts_the_block_and_rearms_the_thresholds():
    from tessera.billing.state import BillingState

    st = BillingState(agreements(limits={"spend": {"amount": "10.00", "thresholds": [80, 100],
                                                   "enforcement": "hard"}}))
    st.ledger.add(usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T10:00:00Z", vcpu=30))    # 12.00 spend
    first = [e for e in st.outputs({("gcp", "2026-03")}) if isinstance(e, UsageLimitAlert)]
    assert [(a.threshold_pct, a.enforcement, a.lifted) for a in first] == [(80, "soft", False), (100, "hard", False)]
    assert st.ledger.blocked == {"gcp": "2026-03"}
    raised = parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"},
                                "limits": {"spend": {"amount": "50.00", "thresholds": [80, 100],
                                                     "enforcement": "hard"}}}])["gcp"]
    touched = st.update_agreement(raised)
    events = [e for e in st.outputs(touched) if isinstance(e, UsageLimitAlert)]
    assert [(a.threshold_pct, a.lifted, a.limit) for a in events] == [(24, True, Decimal("50.000000"))]
    assert st.ledger.blocked == {}
    st.ledger.add(usage("u2", "2026-03-02T00:00:00Z", "2026-03-02T10:00:00Z", vcpu=75))    # +30.00 = 42.00
    again = [e for e in st.outputs({("gcp", "2026-03")}) if isinstance(e, UsageLimitAlert)]
    assert [(a.threshold_pct, a.enforcement) for a in again] == [(80, "soft")]


def test_new_terms_rate_from_their_effective_time_not_the_whole_month():
    base = {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"}}
    cheaper = {**base, "rates": {"vcpu_hour": "0.02"}, "effective_from": "2026-03-11T00:00:00Z"}
    led = Ledger(parse_agreements([cheaper, base]))     # listed in any order
    # 1 vCPU from Mar 10 12:00 to Mar 11 12:00: 12 h at 0.04 and 12 h at 0.02
    led.add(usage("u1", "2026-03-10T12:00:00Z", "2026-03-11T12:00:00Z", vcpu=1))
    inv = led.invoice("gcp", "2026-03")
    assert [(l.sku, str(l.quantity), inv.money(l.amount_minor)) for l in inv.lines] == [
        ("vcpu_hour", "12.000000000", "0.48"), ("vcpu_hour@2026-03-11T00:00Z", "12.000000000", "0.24")]


def test_an_agreement_update_on_the_live_state_keeps_earlier_usage_at_earlier_terms():
    from tessera.billing.state import BillingState
    from tessera.pricing.agreements import parse_agreement
    state = BillingState(dict(parse_agreements([{"partner": "gcp", "currency": "USD",
                                                 "rates": {"vcpu_hour": "0.04"}}])))
    state.update_agreement(parse_agreement({"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.02"},
                                            "tiers": {"vcpu_hour": [{"from": "0", "rate": "0.02"},
                                                                    {"from": "10", "rate": "0.01"}]},
                                            "effective_from": "2026-03-11T00:00:00Z"}))
    state.ledger.add(usage("u1", "2026-03-10T00:00:00Z", "2026-03-11T10:00:00Z", vcpu=1))
    inv = state.ledger.invoice("gcp", "2026-03")
    # 24 h at 0.04 = 0.96; then tiers count on from 24 unit-hours: all 10 h in band 2 at 0.01
    assert [(l.sku, inv.money(l.amount_minor)) for l in inv.lines] == [
        ("vcpu_hour", "0.96"), ("vcpu_hour/tier2@2026-03-11T00:00Z", "0.10")]
    # undated terms replace the partner's terms for all time
    state.update_agreement(parse_agreement({"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.03"}}))
    assert state.ledger.invoice("gcp", "2026-03").total == "1.02"


def test_two_versions_with_the_same_effective_time_are_refused():
    doc = {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"}, "effective_from": "2026-03-11T00:00:00Z"}
    with pytest.raises(AgreementError, match="same effective_from"):
        parse_agreements([doc, doc])


@pytest.mark.parametrize("currency,places", [("CLP", 0), ("VND", 0), ("ISK", 0), ("JPY", 0), ("KWD", 3),
                                             ("BHD", 3), ("EUR", 2)])
def test_minor_units_come_from_the_currency_data(currency, places):
    (a,) = parse_agreements([{"partner": "p", "currency": currency, "rates": {"vcpu_hour": "1.2345"}}]).values()
    assert a.minor_unit == places
    led = Ledger({"p": a})
    led.add(usage("u1", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", partner="p", res="p/1", vcpu=1))
    total = led.invoice("p", "2026-03").total
    assert (len(total.split(".")[1]) if "." in total else 0) == places


def test_an_unknown_currency_is_refused():
    with pytest.raises(AgreementError, match="'XYZ' is not an ISO 4217 currency"):
        parse_agreements([{"partner": "p", "currency": "XYZ", "rates": {"vcpu_hour": "1"}}])
