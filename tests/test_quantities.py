"""Unit parsing and price conversion: property tests and hand-checked values."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.pricing.rates import FxTable, OwnCost, PricingError, RateCard, to_hourly
from tessera.resources.quantities import QuantityError, gib, parse_bytes, parse_cpu, parse_gbps

BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(sorted(BINARY)))
def test_binary_suffixes_are_powers_of_1024(n, suffix):
    assert parse_bytes(f"{n}{suffix}") == n * BINARY[suffix]
    assert parse_bytes(f"{n} {suffix}B") == n * BINARY[suffix]


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(sorted(DECIMAL)))
def test_decimal_suffixes_are_powers_of_1000(n, suffix):
    assert parse_bytes(f"{n}{suffix}") == n * DECIMAL[suffix]
    assert parse_bytes(f"{n}{suffix.upper()}B") == n * DECIMAL[suffix]


@given(st.integers(min_value=1, max_value=10**6))
def test_gib_is_larger_than_gb(n):
    assert parse_bytes(f"{n}Gi") > parse_bytes(f"{n}G")


@given(st.integers(min_value=0, max_value=10**7))
def test_millicores_round_trip(m):
    assert parse_cpu(f"{m}m") == pytest.approx(m / 1000, abs=1e-12)


@given(st.integers(min_value=0, max_value=2**53))
def test_plain_numbers_are_base_units(n):
    assert parse_bytes(n) == n and parse_bytes(str(n)) == n


@given(st.text(max_size=12))
@settings(max_examples=300)
def test_garbage_raises_a_quantity_error_never_anything_else(text):
    for parse in (parse_bytes, parse_cpu, parse_gbps):
        try:
            value = parse(text)
        except QuantityError:
            continue
        assert value >= 0


@pytest.mark.parametrize("text, expected", [
    ("16303140Ki", 16694415360), ("4Gi", 4294967296), ("1G", 10**9), ("1.5GiB", 1610612736),
    ("512MB", 512 * 10**6), ("12e6", 12 * 10**6), ("0.5Ki", 512), ("95Gi", 95 << 30),
])
def test_kubernetes_and_human_sizes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text, expected", [("3920m", 3.92), ("2", 2.0), ("0.25", 0.25), ("500u", 0.0005),
                                            ("4 vCPUs", 4.0)])
def test_cpu(text, expected):
    assert parse_cpu(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [("10Gbps", 10.0), ("100 Mbps", 0.1), ("25", 25.0), ("1Tbps", 1000.0)])
def test_network(text, expected):
    assert parse_gbps(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["-1Gi", "lots", "4Gx", "", "1..2"])
def test_bad_sizes_say_what_was_expected(bad):
    with pytest.raises(QuantityError, match="examples|non-negative|not a number"):
        parse_bytes(bad)


def test_gib_helper():
    assert gib("8.0") == 8 << 30 and gib(0.5) == 1 << 29


def test_price_periods_and_fx():
    assert to_hourly(Decimal("0.0001"), "second") == Decimal("0.36")
    assert to_hourly(Decimal("730"), "month") == Decimal("1")
    fx = FxTable("USD", {"EUR": Decimal("1.10")})
    assert fx.to_base(Decimal("2"), "eur") == Decimal("2.2")
    with pytest.raises(PricingError, match="no FX rate for GBP"):
        fx.to_base(Decimal(1), "GBP")
    with pytest.raises(PricingError, match="unknown"):
        to_hourly(Decimal(1), "fortnight")


def test_rate_card_precedence():
    card = RateCard(instance_hour={"big": Decimal("3")}, vcpu_hour=Decimal("0.02"), gib_hour=Decimal("0.005"))
    assert card.price("big", 64, 256 << 30, 0, Decimal("9")) == Decimal("3")
    assert card.price("small", 2, 4 << 30, 0, Decimal("9")) == Decimal("0.06")
    assert RateCard(discount_pct=Decimal(25)).price("x", 1, 0, 0, Decimal("1")) == Decimal("0.75")
    with pytest.raises(PricingError):
        RateCard().price("x", 1, 0, 0, None)


def test_own_capacity_is_never_free():
    assert OwnCost(capex=Decimal("12000"), amortization_months=48, opex_per_hour=Decimal("0.15")).per_hour() > 0
    with pytest.raises(PricingError, match="must cost something"):
        OwnCost(capex=Decimal(0)).per_hour()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-10**15, 7_258_118_400 * 10**6 + 10**12), min_size=1, max_size=20))
def test_period_of_remembers_the_last_month_without_ever_answering_another(instants):
    from bisect import bisect_right

    from tessera.pricing.periods import MONTH_STARTS, period_name, period_of
    for us in instants:       # any order: jumps between months, back and forth
        assert period_of(us) == period_name(bisect_right(MONTH_STARTS, us) - 1)
        assert period_of(us - 1) == period_name(bisect_right(MONTH_STARTS, us - 1) - 1)
