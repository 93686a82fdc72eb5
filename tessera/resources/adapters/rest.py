"""A generic REST/JSON partner API: paginated listing, declarative field mapping.

The mapping names, for each standard field, a dotted path into one item of the listing
(``flavor.cpus``), and how to read its unit. Pages are followed through a "next" link
(``next_path``) until it is absent. Each page is revalidated with its ETag
(If-None-Match), fetched with a timeout, and retried with backoff on 5xx and timeouts.
A page that is not JSON, lacks the items list, or has an item without a required field
fails the whole listing: the discovery loop then keeps the partner's last good view
rather than "removing" resources that merely failed to parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from tessera.pricing.rates import FxTable, RateCard, to_hourly
from tessera.schemas import Capacity, PricingModel, ResourceSpec

from ..model import AdapterError, DiscoveredResource
from ..quantities import QuantityError, parse_bytes, parse_cpu, parse_gbps
from .http import HttpFetcher

REQUIRED = ("id", "vcpu", "memory")
MAX_PAGES = 10_000


def dig(obj: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        if isinstance(obj, Mapping):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


@dataclass
class FieldMapping:
    """Standard field -> dotted path in an item. Units say how to read bare numbers."""

    id: str = "id"
    vcpu: str = "vcpu"
    memory: str = "memory"
    memory_unit: str = "B"  # for bare numbers: B, KiB, MiB, GiB, MB, GB
    storage: str = ""
    storage_unit: str = "B"
    network_gbps: str = ""
    gpu: str = ""
    gpu_model: str = ""
    instance_type: str = ""
    region: str = ""
    zone: str = ""
    tags: str = ""
    price: str = ""
    price_period: str = "hour"  # second, minute, hour, day, month
    currency: str = ""  # path; the adapter's currency when empty
    status: str = ""
    ready_values: tuple[str, ...] = ("ready", "running", "active", "available", "up")


def _size(value: Any, unit: str) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return parse_bytes(f"{value}{'' if unit in ('B', '') else unit}")
    return parse_bytes(value)


@dataclass
class RestAdapter:
    partner: str
    url: str
    items_path: str = "items"
    next_path: str = "next"
    fields: FieldMapping = field(default_factory=FieldMapping)
    currency: str = "USD"
    fx: FxTable = field(default_factory=FxTable)
    rate_card: RateCard = field(default_factory=RateCard)
    tags: tuple[str, ...] = ()
    token: str = field(default="", repr=False)   # a secret: never in repr or logs
    fetcher: HttpFetcher = field(default_factory=HttpFetcher)
    #: Why items of the last snapshot were skipped (malformed); empty when it was whole.
    last_skipped: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.token:
            if not _secure(self.url):
                raise AdapterError(f"partner {self.partner!r}: a token is sent only over https (or to this "
                                   f"machine); {self.url!r} is neither")
            self.fetcher.headers.setdefault("Authorization", f"Bearer {self.token}")
        self.fetcher.headers.setdefault("Accept", "application/json")

    async def snapshot(self) -> list[DiscoveredResource]:
        self.last_skipped = []
        out: list[DiscoveredResource] = []
        url: str | None = self.url
        seen_urls: set[str] = set()
        async with aiohttp.ClientSession() as session:
            while url:
                if url in seen_urls or len(seen_urls) >= MAX_PAGES:
                    raise AdapterError(f"pagination loop at {url}")
                seen_urls.add(url)
                body = await self.fetcher.get(session, url)
                try:
                    page = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise AdapterError(f"{url}: not JSON ({exc})") from None
                items = dig(page, self.items_path)
                if not isinstance(items, list):
                    raise AdapterError(f"{url}: no list at {self.items_path!r}")
                for i, item in enumerate(items):
                    try:
                        out.append(self.item_to_resource(item, where=f"{url} item {i}"))
                    except (AdapterError, ValueError) as exc:
                        # One malformed item costs that item, not the partner's listing; the
                        # listing is then partial (see Discoverer: nothing is removed on it).
                        self.last_skipped.append(str(exc)[:500])
                nxt = dig(page, self.next_path) if self.next_path else None
                url = urljoin(url, nxt) if isinstance(nxt, str) and nxt else None
                if url and _origin(url) != _origin(self.url):
                    # The token must not follow a link elsewhere (or down to plain http).
                    raise AdapterError(f"partner {self.partner!r}: next page {url[:200]!r} is not on "
                                       f"{_origin(self.url)}; refusing to follow it")
        return out

    def item_to_resource(self, item: Any, where: str = "") -> DiscoveredResource:
        f = self.fields
        if not isinstance(item, Mapping):
            raise AdapterError(f"{where}: an item must be an object")
        values = {name: dig(item, getattr(f, name)) for name in REQUIRED}
        missing = [n for n, v in values.items() if v is None]
        if missing:
            raise AdapterError(f"{where}: missing {', '.join(f'{n} ({getattr(f, n)})' for n in missing)}")
        try:
            vcpu = parse_cpu(values["vcpu"])
            mem = _size(values["memory"], f.memory_unit)
            storage = _size(dig(item, f.storage) or 0, f.storage_unit) if f.storage else 0
            net = parse_gbps(dig(item, f.network_gbps) or 0) if f.network_gbps else 0.0
            gpus = int(parse_cpu(dig(item, f.gpu) or 0)) if f.gpu else 0
        except QuantityError as exc:
            raise AdapterError(f"{where}: {exc}") from None
        itype = str(dig(item, f.instance_type) or "") if f.instance_type else ""
        raw_price = dig(item, f.price) if f.price else None
        catalog_price = None
        if raw_price is not None:
            try:
                catalog_price = to_hourly(Decimal(str(raw_price)), f.price_period)
            except InvalidOperation:
                raise AdapterError(f"{where}: price {raw_price!r} is not a number") from None
        currency = str(dig(item, f.currency) or self.currency) if f.currency else self.currency
        try:
            price = self.fx.to_base(self.rate_card.price(itype, vcpu, mem, gpus, catalog_price), currency)
        except ValueError as exc:
            raise AdapterError(f"{where}: {exc}") from None
        tags = dig(item, f.tags) if f.tags else None
        tags = [str(t) for t in tags] if isinstance(tags, list) else []
        ready = None
        if f.status:
            status = dig(item, f.status)
            ready = str(status).lower() in f.ready_values if status is not None else None
        spec = ResourceSpec(
            provider=self.partner, kind="vm", instance_type=itype,
            region=str(dig(item, f.region) or "") if f.region else "",
            zone=str(dig(item, f.zone) or "") if f.zone else "",
            capacity=Capacity(vcpu=vcpu, memory_bytes=mem, storage_bytes=storage, network_gbps=net, gpu=gpus),
            gpu_model=str(dig(item, f.gpu_model) or "") if f.gpu_model and gpus else "",
            tags=sorted(set(tags) | set(self.tags)), pricing_model=PricingModel.on_demand,
            price_per_hour=price, currency=self.fx.base,
        )
        return DiscoveredResource(f"{self.partner}/{values['id']}", spec, ready)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _secure(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() == "https" or (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
