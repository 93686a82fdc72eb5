"""Which compliance tags a partner's resources may carry.

Compliance tags (``hipaa``, ``pci`` ... and ``residency:<place>``) decide where regulated
work may run, so they are the operator's word, not the partner's: a tag a partner's API or
labels report is kept only if the operator's partners file allows that partner that tag
(``compliance = [...]``, plus any compliance tag the operator gives the partner in ``tags``).
Others are dropped and logged. Tags that are not compliance tags (``ssd``, ``gpu:a100``)
pass as reported.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from .model import DiscoveredResource

#: Tags that certify a resource for regulated work.
COMPLIANCE_TAGS = frozenset({"hipaa", "pci", "pci-dss", "sox", "gdpr", "fedramp", "iso27001", "soc2", "hitrust",
                             "itar", "cjis"})


def is_compliance_tag(tag: str) -> bool:
    """>>> is_compliance_tag("hipaa"), is_compliance_tag("residency:eu"), is_compliance_tag("ssd")
    (True, True, False)
    """
    return tag.lower() in COMPLIANCE_TAGS or tag.lower().startswith("residency:")


def screen(resources: Iterable[DiscoveredResource], allowed: frozenset[str]
           ) -> tuple[list[DiscoveredResource], list[tuple[str, str]]]:
    """The resources with compliance tags outside ``allowed`` removed, and what was removed
    as (resource id, tag) pairs."""
    kept, dropped = [], []
    for r in resources:
        bad = [t for t in r.spec.tags if is_compliance_tag(t) and t not in allowed]
        if bad:
            dropped += [(r.resource_id, t) for t in bad]
            spec = r.spec.model_copy(update={"tags": [t for t in r.spec.tags if t not in bad]})
            r = dataclasses.replace(r, spec=spec)
        kept.append(r)
    return kept, dropped
