"""Partners are outside systems: their data is read exactly, their failures stay theirs,
and Tessera's secrets never leak to them or to logs."""

from __future__ import annotations

import random

import pytest
from kubernetes.utils.quantity import parse_quantity
from tests.conftest import run
from tests.partner_servers import Published, RestPartner
from tests.test_discovery import MACHINES, _rest

import tessera.schemas as s
from tessera.app.cli.main import main
from tessera.config import load_settings
from tessera.resources.adapters.http import HttpFetcher, retry_after_s
from tessera.resources.adapters.kubernetes import KubernetesAdapter
from tessera.resources.adapters.rest import RestAdapter
from tessera.resources.discovery import Discoverer
from tessera.resources.model import AdapterError
from tessera.resources.quantities import kubernetes_quantity, parse_bytes, parse_cpu

#: Quantities as Kubernetes objects carry them; the reference is the Kubernetes client's parser.
K8S_CASES = ["0", "1", "100m", "100M", "3920m", "16303140Ki", "4Gi", "1.5Gi", "1G", "1Ki", "12e6", "1E3", "1e-3",
             "0.5", ".5", "5.", "+1", "250u", "7n", "2T", "3P", "1E", "1Ei", "123Mi", "129M", "129e6", "1.25k"]


@pytest.mark.parametrize("text", K8S_CASES)
def test_kubernetes_quantities_read_exactly_as_kubernetes_reads_them(text):
    assert kubernetes_quantity(text) == parse_quantity(text)


def test_mega_is_not_milli():
    assert parse_cpu("100M") == 1e8 and parse_cpu("100m") == 0.1
    assert parse_bytes("100M") == 100_000_000 and parse_bytes("1Mi") == 1 << 20
    assert parse_cpu("2 cores") == 2.0 and parse_bytes("16 GiB") == 16 << 30     # human units still read


def test_settings_and_adapters_never_show_secrets(capsys, monkeypatch):
    st = load_settings(env={}, clickhouse_url="https://bob:hunter2@ch.example:8443/db", kafka_sasl_password="pw-x1")
    assert "hunter2" not in repr(st) and "pw-x1" not in repr(st)
    assert st.shown()["clickhouse_url"] == "https://bob:********@ch.example:8443/db"
    monkeypatch.setenv("TESSERA_CLICKHOUSE_URL", "https://bob:hunter2@ch.example:8443/db")
    assert main(["config"]) == 0
    assert "hunter2" not in capsys.readouterr().out
    rest = RestAdapter("p", "https://partner.example/v1", token="tok-secret")
    k8s = KubernetesAdapter("k", "https://k8s.example:6443", token="tok-secret")
    assert "tok-secret" not in repr(rest) and "tok-secret" not in repr(k8s)


def test_a_token_goes_only_over_https_and_never_to_another_origin():
    with pytest.raises(AdapterError, match="only over https"):
        RestAdapter("p", "http://partner.example/v1", token="t")
    with RestPartner(MACHINES, page_size=3) as elsewhere, RestPartner(MACHINES, page_size=3) as srv:
        srv.next_base = elsewhere.url       # page 1 links to page 2 on another server
        with pytest.raises(AdapterError, match="not on"):
            run(_rest(srv.url, token="t").snapshot())
        assert elsewhere.requests == [], "nothing, and no token, went to the other origin"


def test_retries_honour_retry_after_and_are_jittered_otherwise():
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    with RestPartner(MACHINES, page_size=10) as srv:
        srv.faults = ["429", "500", "500"]
        fetcher = HttpFetcher(timeout_s=2, retries=3, backoff_s=0.4, _rng=random.Random(7), _sleep=record)
        adapter = RestAdapter("restco", f"{srv.url}/v1/machines?page=1", items_path="items",
                              next_path="links.next", fields=_rest(srv.url).fields, fx=_rest(srv.url).fx,
                              fetcher=fetcher)
        assert len(run(adapter.snapshot())) == 7
    assert waits[0] == 1.0, "the 429's Retry-After was honoured"
    assert 0 <= waits[1] <= 0.4 and 0 <= waits[2] <= 0.8 and waits[1] != waits[2], "jittered exponential backoff"
    assert retry_after_s("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0 and retry_after_s("soon") is None


def test_oversized_responses_are_refused():
    with RestPartner(MACHINES, page_size=10) as srv:
        adapter = _rest(srv.url)
        adapter.fetcher.max_bytes = 200
        with pytest.raises(AdapterError, match="exceeds"):
            run(adapter.snapshot())


def test_a_malformed_item_costs_that_item_not_the_partner_and_removes_nothing():
    publish = Published()

    with RestPartner(MACHINES, page_size=3) as srv:
        d = Discoverer(_rest(srv.url), publish)
        assert sum(isinstance(e, s.ResourceDiscovered) for e in run(d.poll_once())) == 7
        broken = dict(MACHINES[2], flavor={"name": "c4", "cpus": "lots", "ram": 8192})
        srv.machines = [*MACHINES[:2], broken, *MACHINES[3:], dict(MACHINES[0], machine_id="m-new")]
        events = run(d.poll_once())
    kinds = sorted((type(e).__name__, e.resource_id) for e in events if not isinstance(e, s.HealthSample))
    assert kinds == [("ResourceDiscovered", "restco/m-new")], "the new one is found, the unreadable one kept"
    assert "restco/m2" in d.view and d.failures == 0


def test_one_partner_failing_in_any_way_stops_no_other():
    class Exploding:
        partner = "boom"

        async def snapshot(self):
            raise KeyError("a bug in an adapter")

    publish = Published()

    d = Discoverer(Exploding(), publish)
    assert run(d.poll_once()) == [] and d.failures == 1


def test_compliance_tags_are_the_operators_word_not_the_partners(tmp_path):
    from tests.partner_servers import KubernetesAPI, k8s_node
    from tests.test_discovery import RATES

    from tessera.resources.partners import compliance_allow_lists

    partners = tmp_path / "partners.toml"
    partners.write_text('[[partner]]\nname = "acme-k8s"\nadapter = "kubernetes"\nserver = "https://k8s.example"\n'
                        'compliance = ["pci"]\ntags = ["residency:eu", "ssd"]\n')
    allow = compliance_allow_lists(partners)
    assert allow == {"acme-k8s": frozenset({"pci", "residency:eu"})}
    published = publish = Published()

    labels = {"tessera.io/compliance-hipaa": "true", "tessera.io/compliance-pci": "true",
              "tessera.io/residency": "us", "gpu-class": "x"}
    with KubernetesAPI() as api:
        api.nodes = {"n1": k8s_node("n1", labels=labels)}
        d = Discoverer(KubernetesAdapter("acme-k8s", api.url, token="secret-token", rate_card=RATES), publish,
                       compliance=allow["acme-k8s"])
        run(d.poll_once())
    (found,) = [e for e in published[0] if isinstance(e, s.ResourceDiscovered)]
    assert found.spec.tags == ["pci"], "hipaa and residency:us were not allowed for this partner"

