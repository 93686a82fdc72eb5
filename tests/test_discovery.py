"""Discovery adapters against local servers playing the partners, and the shipped catalogs."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.conftest import run
from tests.partner_servers import KubernetesAPI, Published, RestPartner, k8s_node

import tessera.schemas as s
from tessera.app.datasets import DATA_DIR
from tessera.pricing.rates import FxTable, RateCard
from tessera.resources.adapters.catalog import CatalogAdapter
from tessera.resources.adapters.http import HttpFetcher
from tessera.resources.adapters.kubernetes import KubernetesAdapter
from tessera.resources.adapters.rest import FieldMapping, RestAdapter
from tessera.resources.discovery import Discoverer, diff
from tessera.resources.model import AdapterError

RATES = RateCard(vcpu_hour=Decimal("0.03"), gib_hour=Decimal("0.004"), gpu_hour=Decimal("0.9"))


# --------------------------------------------------------------------------- Kubernetes
def test_kubernetes_nodes_are_normalized():
    with KubernetesAPI() as api:
        api.nodes = {
            "n1": k8s_node("n1", labels={"tessera.io/compliance-hipaa": "true", "tessera.io/residency": "eu"}),
            "g1": k8s_node("g1", cpu="32", memory="256Gi", gpus="4",
                           labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}, ready=False),
            "t1": k8s_node("t1", taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]),
        }
        adapter = KubernetesAdapter("acme-k8s", api.url, token="secret-token", rate_card=RATES)
        got = {r.resource_id: r for r in run(adapter.snapshot())}
    n1, g1, t1 = got["acme-k8s/n1"], got["acme-k8s/g1"], got["acme-k8s/t1"]
    assert n1.spec.capacity.vcpu == 3.92 and n1.spec.capacity.memory_bytes == 16303140 * 1024
    assert n1.spec.capacity.storage_bytes == 95 << 30
    assert (n1.spec.region, n1.spec.zone, n1.spec.instance_type) == ("eu-west", "eu-west-a", "m5.xlarge")
    assert n1.spec.tags == ["hipaa", "residency:eu"] and n1.ready is True
    assert g1.spec.capacity.gpu == 4 and g1.spec.gpu_model == "NVIDIA-A100-SXM4-40GB" and g1.ready is False
    assert "taint:dedicated" in t1.spec.tags
    # 3.92 vCPU x 0.03 + 15.548... GiB x 0.004
    assert n1.spec.price_per_hour == Decimal("0.1176") + (Decimal(16303140 * 1024) / (1 << 30) * Decimal("0.004")
                                                          ).quantize(Decimal("1e-10"))


def test_kubernetes_bad_token_and_server_errors_are_adapter_errors():
    with KubernetesAPI() as api:
        with pytest.raises(AdapterError, match="401"):
            run(KubernetesAdapter("p", api.url, token="wrong", rate_card=RATES).snapshot())
        api.fail_next = 1
        with pytest.raises(AdapterError, match="500"):
            run(KubernetesAdapter("p", api.url, token="secret-token", rate_card=RATES).snapshot())


def test_kubernetes_node_without_rate_card_is_a_clear_error():
    with KubernetesAPI() as api:
        api.nodes = {"n1": k8s_node("n1")}
        with pytest.raises(AdapterError, match="rate card"):
            run(KubernetesAdapter("p", api.url, token="secret-token").snapshot())


def test_kubernetes_list_then_watch():
    with KubernetesAPI() as api:
        api.nodes = {"n1": k8s_node("n1")}
        api.watch_events = [
            {"type": "ADDED", "object": k8s_node("n2")},
            {"type": "MODIFIED", "object": k8s_node("n1", ready=False, rv="101")},
            {"type": "DELETED", "object": k8s_node("n2", rv="102")},
        ]
        adapter = KubernetesAdapter("p", api.url, token="secret-token", rate_card=RATES)

        async def go():
            listed, rv = await adapter.list_nodes()
            changes = [(kind, r.resource_id, r.ready) async for kind, r in adapter.watch(rv, timeout_s=5)]
            return listed, rv, changes

        listed, rv, changes = run(go())
    assert [r.resource_id for r in listed] == ["p/n1"] and rv == "100"
    assert changes == [("ADDED", "p/n2", True), ("MODIFIED", "p/n1", False), ("DELETED", "p/n2", True)]
    assert any("watch=true" in p and "resourceVersion=100" in p for p in api.requests)


# --------------------------------------------------------------------------- REST
MACHINES = [
    {"machine_id": f"m{i}", "flavor": {"name": "c4", "cpus": 4, "ram": 8192},
     "location": {"region": "fra", "zone": "fra-1"}, "pricing": {"amount": "29.2", "currency": "EUR"},
     "state": "running", "compliance": ["pci"]}
    for i in range(7)
]
MAPPING = FieldMapping(id="machine_id", vcpu="flavor.cpus", memory="flavor.ram", memory_unit="Mi",
                       instance_type="flavor.name", region="location.region", zone="location.zone",
                       price="pricing.amount", price_period="month", currency="pricing.currency", tags="compliance",
                       status="state")


def _rest(url, **kw):
    return RestAdapter("restco", f"{url}/v1/machines?page=1", items_path="items", next_path="links.next",
                       fields=MAPPING, fx=FxTable("USD", {"EUR": Decimal("1.10")}),
                       fetcher=HttpFetcher(timeout_s=0.5, retries=2, backoff_s=0.01), **kw)


def test_rest_pages_mapping_units_currency_and_etags():
    with RestPartner(MACHINES, page_size=3) as srv:
        adapter = _rest(srv.url)
        first = run(adapter.snapshot())
        second = run(adapter.snapshot())
        assert srv.not_modified == 3, "every page revalidated with If-None-Match and answered 304"
    assert [r.resource_id for r in first] == [f"restco/m{i}" for i in range(7)]
    assert first == second
    spec = first[0].spec
    assert spec.capacity.memory_bytes == 8 << 30 and spec.capacity.vcpu == 4.0
    assert spec.price_per_hour == Decimal("0.044") and spec.currency == "USD"  # 29.2 EUR/month /730 x 1.10
    assert spec.tags == ["pci"] and first[0].ready is True


@pytest.mark.parametrize("faults, ok", [
    (["500"], True), (["timeout"], True), (["500", "500"], True),  # retried and recovered
    (["500", "500", "500"], False), (["malformed"], False), (["no-items"], False),
])
def test_rest_faults_are_retried_or_reported(faults, ok):
    with RestPartner(MACHINES, page_size=3) as srv:
        srv.faults = list(faults)
        adapter = _rest(srv.url)
        if ok:
            assert len(run(adapter.snapshot())) == 7
        else:
            with pytest.raises(AdapterError):
                run(adapter.snapshot())


def test_failed_listing_keeps_the_last_good_view_and_vanished_resources_are_removed():
    publish = Published()

    with RestPartner(MACHINES, page_size=3) as srv:
        d = Discoverer(_rest(srv.url), publish)
        first = run(d.poll_once())
        assert sum(isinstance(e, s.ResourceDiscovered) for e in first) == 7
        srv.faults = ["malformed"]
        assert run(d.poll_once()) == [] and len(d.view) == 7 and d.failures == 1
        srv.machines = MACHINES[:5] + [dict(MACHINES[5], flavor={"name": "c8", "cpus": 8, "ram": 16384})]
        third = run(d.poll_once())
    kinds = sorted((type(e).__name__, getattr(e, "resource_id", "")) for e in third
                   if not isinstance(e, s.HealthSample))
    assert kinds == [("ResourceRemoved", "restco/m6"), ("ResourceUpdated", "restco/m5")]


def test_diff_event_ids_are_deterministic():
    adapter = CatalogAdapter("do", str(DATA_DIR / "digitalocean_skypilot_catalog/do_vms.csv"))
    listing = run(adapter.snapshot())
    _, a = diff({}, listing)
    _, b = diff({}, listing)
    assert [e.event_id for e in a] == [e.event_id for e in b]


# --------------------------------------------------------------------------- catalogs
def test_skypilot_catalog_from_file_and_url():
    path = DATA_DIR / "digitalocean_skypilot_catalog/do_vms.csv"
    adapter = CatalogAdapter("digitalocean", str(path), max_per_type=3, regions=frozenset({"nyc1"}))
    rs = run(adapter.snapshot())
    assert rs and all(r.spec.region == "nyc1" for r in rs)
    types = {r.spec.instance_type for r in rs}
    assert len(rs) == 3 * len(types)
    g = next(r for r in rs if r.spec.instance_type == "g-2vcpu-8gb")
    assert g.spec.price_per_hour == Decimal("0.09375") and g.spec.capacity.memory_bytes == 8 << 30

    import http.server
    import threading

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(path.parent), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/{path.name}"
        assert run(CatalogAdapter("digitalocean", url, max_per_type=3, regions=frozenset({"nyc1"})).snapshot()) == rs
    finally:
        srv.shutdown()


def test_gcp_catalog_pricing_models():
    path = str(DATA_DIR / "gcp_cyclenerd_pricing/gcp_compute_instance_prices.csv")
    pick = dict(regions=frozenset({"europe-west4"}), instance_types=frozenset({"n2-standard-4"}))
    od = run(CatalogAdapter("gcp", path, format="gcp", **pick).snapshot())[0]
    spot = run(CatalogAdapter("gcp", path, format="gcp", pricing_model="spot", **pick).snapshot())[0]
    cud = run(CatalogAdapter("gcp", path, format="gcp", pricing_model="committed_1y", **pick).snapshot())[0]
    assert od.spec.capacity.vcpu == 4 and od.spec.capacity.memory_bytes == 16 << 30
    assert spot.spec.price_per_hour < cud.spec.price_per_hour < od.spec.price_per_hour
    assert cud.spec.pricing_model == s.PricingModel.committed
    discounted = run(CatalogAdapter("gcp", path, format="gcp", rate_card=RateCard(discount_pct=Decimal(10)),
                                    **pick).snapshot())[0]
    assert discounted.spec.price_per_hour == (od.spec.price_per_hour * Decimal("0.9")).normalize()


def test_a_file_that_is_not_a_catalog_is_rejected(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(AdapterError, match="missing columns"):
        run(CatalogAdapter("p", str(bad)).snapshot())


# --------------------------------------------------------------------------- CLI
REQUIRED_FIELDS = {"id", "provider", "region", "zone", "vcpu", "memory_bytes", "gpu", "gpu_model", "price_per_hour",
                   "currency", "tags", "healthy"}


def test_cli_discover_catalog_prints_normalized_json_lines(capsys):
    import orjson

    from tessera.app.cli.main import main

    path = str(DATA_DIR / "gcp_cyclenerd_pricing/gcp_compute_instance_prices.csv")
    assert main(["resources", "discover", "--catalog", path, "--format", "gcp", "--partner", "gcp",
                 "--region", "europe-west4", "--once", "--json"]) == 0
    lines = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) > 100 and all(REQUIRED_FIELDS <= set(x) for x in lines)
    assert {x["region"] for x in lines} == {"europe-west4"} and {x["provider"] for x in lines} == {"gcp"}
    Decimal(lines[0]["price_per_hour"])  # an exact decimal string


def test_cli_discover_kubernetes(capsys):
    import orjson

    from tessera.app.cli.main import main

    with KubernetesAPI() as api:
        api.nodes = {"n1": k8s_node("n1", gpus="2"), "n2": k8s_node("n2", ready=False)}
        assert main(["resources", "discover", "--kubernetes-url", api.url, "--token", "secret-token",
                     "--partner", "acme", "--rate-vcpu-hour", "0.03", "--rate-gpu-hour", "1", "--once", "--json"]) == 0
    lines = {x["id"]: x for x in map(orjson.loads, capsys.readouterr().out.splitlines())}
    assert lines["acme/n1"]["gpu"] == 2 and lines["acme/n1"]["healthy"] is True
    assert lines["acme/n2"]["healthy"] is False
    assert lines["acme/n1"]["price_per_hour"] == "2.1176"  # 3.92 x 0.03 + 2 x 1


def test_discoverer_follows_a_kubernetes_watch():
    published: list[s.Event] = []

    async def publish(events):
        published.extend(events)

    with KubernetesAPI() as api:
        api.nodes = {"n1": k8s_node("n1"), "n2": k8s_node("n2")}
        api.watch_events = [{"type": "MODIFIED", "object": k8s_node("n1", cpu="2", rv="101")},
                            {"type": "DELETED", "object": k8s_node("n2", rv="102")}]
        d = Discoverer(KubernetesAdapter("p", api.url, token="secret-token", rate_card=RATES), publish)

        async def go():
            listing, rv = await d.adapter.list_nodes()
            d.view, events = diff(d.view, listing)
            await publish(events)
            await d.follow_watch(rv, timeout_s=5)

        run(go())
    kinds = [(e.event_type, e.resource_id) for e in published if not isinstance(e, s.HealthSample)]
    assert kinds == [("resource.discovered", "p/n1"), ("resource.discovered", "p/n2"),
                     ("resource.updated", "p/n1"), ("resource.removed", "p/n2")]
    assert set(d.view) == {"p/n1"} and d.view["p/n1"].spec.capacity.vcpu == 2.0


def test_partners_file_builds_every_adapter(tmp_path):
    from pathlib import Path

    from tessera.config import ConfigError
    from tessera.resources.partners import load_partners

    example = Path(__file__).resolve().parent.parent / "docs" / "partners.example.toml"
    adapters, intervals = load_partners(example)
    by_name = {a.partner: a for a in adapters}
    assert set(by_name) == {"own", "digitalocean", "gcp"} and intervals["digitalocean"] == 300
    own = run(by_name["own"].snapshot())
    assert len(own) == 50 and all(r.spec.price_per_hour > 0 for r in own), "own capacity is never free"
    gcp = run(by_name["gcp"].snapshot())
    assert gcp and {r.spec.region for r in gcp} == {"europe-west4"} and all("hipaa" in r.spec.tags for r in gcp)
    bad = tmp_path / "p.toml"
    bad.write_text('[[partner]]\nname = "x"\nadapter = "ftp"\n')
    with pytest.raises(ConfigError, match="adapter = catalog"):
        load_partners(bad)
