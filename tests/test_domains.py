"""Placement domains without a broker: every resource has at most one owner, every request
exactly one home (or a final no_domain answer from one domain), the same on every scheduler."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.scheduler.domains import DomainError, parse_domains, resource_pool, single

DOMAINS = parse_domains({"eu": {"regions": ["europe-west4", "eu-central"]},
                         "us": {"regions": ["us-east1"], "providers": ["gcp", "own"]},
                         "train": {"pools": ["training"]}})


def test_resources_have_one_owner_by_region_provider_and_pool():
    assert DOMAINS.owner("europe-west4", "gcp") == "eu"
    assert DOMAINS.owner("us-east1", "own") == "us"
    assert DOMAINS.owner("us-east1", "digitalocean") is None          # no domain owns it: nobody places on it
    assert DOMAINS.owner("asia", "gcp", resource_pool(["pool=training"])) == "train"
    assert resource_pool(["hipaa"]) == "default"


@given(st.lists(st.sampled_from(["europe-west4", "eu-central", "us-east1", "asia"]), max_size=2),
       st.lists(st.sampled_from(["gcp", "own", "digitalocean"]), max_size=2),
       st.sampled_from(["default", "training"]), st.text(min_size=1, max_size=12))
def test_every_request_has_one_home_that_could_hold_it_and_every_scheduler_agrees(regions, providers, pool, rid):
    home = DOMAINS.route(rid, regions, providers, pool)
    again = parse_domains({"eu": {"regions": ["europe-west4", "eu-central"]},
                           "us": {"regions": ["us-east1"], "providers": ["gcp", "own"]},
                           "train": {"pools": ["training"]}}).route(rid, regions, providers, pool)
    assert home == again                                   # the same on every scheduler
    if home is not None:
        d = next(d for d in DOMAINS.domains if d.name == home)
        assert d.could_hold(regions, providers, pool)
    else:
        assert not any(d.could_hold(regions, providers, pool) for d in DOMAINS.domains)


def test_unconstrained_work_spreads_over_the_domains_and_impossible_work_has_no_home():
    homes = Counter(DOMAINS.route(f"r{i}", [], [], "default") for i in range(3000))
    assert set(homes) == {"eu", "us"} and min(homes.values()) > 1300   # train holds only its pool
    assert DOMAINS.route("r1", ["asia"], [], "default") is None
    assert DOMAINS.route("r1", ["us-east1"], ["digitalocean"], "default") is None
    assert DOMAINS.rejecter == "eu"
    assert single().route("x", ["anywhere"], [], "p") == "global"


@pytest.mark.parametrize("doc, field", [
    ({}, "domains"), ({"eu": ["europe-west4"]}, "domains.eu"), ({"eu": {"zones": []}}, "domains.eu.zones"),
    ({"eu": {"regions": "europe-west4"}}, "domains.eu.regions"), ({"e u": {}}, "e u")])
def test_a_bad_domains_file_names_what_to_fix(doc, field):
    with pytest.raises(DomainError, match=field.replace(".", r"\.")):
        parse_domains(doc)
