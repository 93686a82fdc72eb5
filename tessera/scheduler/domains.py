"""Placement domains: which scheduler owns which resources, and which one places a request.

One scheduler decides for a set of resources (it alone writes that they are taken), so
capacity grows past one scheduler by splitting the resources into domains, each with its
own scheduler. The split is configuration, the same file for every scheduler:

    {"eu": {"regions": ["europe-west4", "eu-central"]},
     "us": {"regions": ["us-east1"], "providers": ["gcp", "own"]},
     "gpu": {"pools": ["training"]}}

A domain owns a resource when the resource matches every selector the domain states
(regions, providers, pools; an unstated one matches all; a resource's pool is its
``pool=<name>`` tag, ``default`` without one); the first domain in the file
that matches owns it, so every resource has at most one owner. A request can go to every
domain that could hold it: its pool (if the domain lists pools) and its allowed regions and
providers (empty = any) must meet the domain's. Among those, rendezvous hashing of the
request id picks one, so unconstrained work spreads evenly over the domains and every
scheduler, computing the same function on the same file, agrees which domain places each
request without talking to the others. A request no domain can hold is rejected with the
code ``no_domain`` by the first domain in the file (and only by it: one answer each).

Pure: no Kafka here; the scheduler worker filters its inputs with ``owns`` and ``route``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

#: The domain of a scheduler run without a domains file: it owns everything.
GLOBAL = "global"


class DomainError(ValueError):
    """A domains file that cannot be used: says which domain and field to fix."""


@dataclass(frozen=True)
class Domain:
    name: str
    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()

    def owns(self, region: str, provider: str, pool: str = "default") -> bool:
        return ((not self.regions or region in self.regions) and (not self.providers or provider in self.providers)
                and (not self.pools or pool in self.pools))

    def could_hold(self, regions: Iterable[str], providers: Iterable[str], pool: str) -> bool:
        regions, providers = set(regions), set(providers)
        return ((not self.pools or pool in self.pools)
                and (not self.regions or not regions or bool(self.regions & regions))
                and (not self.providers or not providers or bool(self.providers & providers)))


@dataclass(frozen=True)
class DomainMap:
    domains: tuple[Domain, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    def owner(self, region: str, provider: str, pool: str = "default") -> str | None:
        """The domain that owns a resource there (the first that matches), or None."""
        return next((d.name for d in self.domains if d.owns(region, provider, pool)), None)

    def route(self, request_id: str, regions: Iterable[str], providers: Iterable[str], pool: str) -> str | None:
        """The domain that places this request, or None when no domain could hold it."""
        regions, providers = list(regions), list(providers)
        candidates = [d.name for d in self.domains if d.could_hold(regions, providers, pool)]
        if not candidates:
            return None
        return max(candidates, key=lambda name: hashlib.blake2b(f"{name}/{request_id}".encode(),
                                                                   digest_size=8).digest())

    @property
    def rejecter(self) -> str:
        """The one domain that answers requests no domain can hold."""
        return self.domains[0].name


def resource_pool(tags: Iterable[str]) -> str:
    """A resource's pool: its ``pool=<name>`` tag, or ``default``."""
    return next((t[5:] for t in tags if t.startswith("pool=") and len(t) > 5), "default")


def single(name: str = GLOBAL) -> DomainMap:
    """No domains file: one domain that owns every resource and places every request."""
    return DomainMap((Domain(name),))


def parse_domains(doc: object) -> DomainMap:
    if not isinstance(doc, dict) or not doc:
        raise DomainError("domains: give an object of domain name -> {regions, providers, pools}, e.g. "
                          '{"eu": {"regions": ["europe-west4"]}}')
    out = []
    for name, sel in doc.items():
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise DomainError(f"domains: {name!r} is not a usable domain name (letters, digits, - and _)")
        if not isinstance(sel, dict):
            raise DomainError(f"domains.{name}: give an object with regions, providers and/or pools")
        unknown = set(sel) - {"regions", "providers", "pools"}
        if unknown:
            raise DomainError(f"domains.{name}.{sorted(unknown)[0]}: unknown selector; use regions, providers, pools")
        values = {}
        for key in ("regions", "providers", "pools"):
            v = sel.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise DomainError(f"domains.{name}.{key}: give a list of names")
            values[key] = frozenset(v)
        out.append(Domain(name, **values))
    return DomainMap(tuple(out))


def load_domains(path: str | Path) -> DomainMap:
    try:
        return parse_domains(json.loads(Path(path).read_text()))
    except json.JSONDecodeError as exc:
        raise DomainError(f"{path}: not JSON ({exc})") from exc
