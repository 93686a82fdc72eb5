"""The edge and the published JSON Schemas give the same verdict on every input.

A producer in another language validates its events against ``schemas/json/`` before
sending; if the edge refused what the schema accepts (or the reverse), its events would
be dead-lettered, or invalid ones would pass its checks. The corpus: one valid sample of
every event type and, for every field of it (nested ones too), the variants a careless or
hostile producer sends: a number as a string, a string as a number, a fraction for an
integer, negative, huge, too long, too many, null, missing, an unknown field. Each goes
through the edge (``decode_obj``) and through an independent JSON Schema 2020-12
validator (the ``jsonschema`` package, with format checking), and the verdicts must match.

Rules JSON Schema cannot state are listed in ``NOT_EXPRESSIBLE`` with the reason; the
corpus stays away from them.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import jsonschema
import orjson
import pytest

from tessera.schemas import SchemaError, decode_obj, encode
from tessera.schemas.jsonschema import event_schema

from .samples import SAMPLES

#: Rules of the edge that JSON Schema cannot express (they relate two values), by event
#: type and the start of the variant's name: those variants are left out of the corpus.
NOT_EXPRESSIBLE = {
    ("agreement.updated", "partner_id"): "agreement.partner must equal partner_id",
    ("agreement.updated", "agreement.partner"): "agreement.partner must equal partner_id",
    ("forecast", "horizons.0.quantiles."): "quantiles must not cross (a higher level, a lower value)",
    ("workload.request", "replicas missing"): "spread_min cannot exceed replicas (the default, 1)",
}

LONG = "x" * 5000


def _variants(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["true", 1, None]
    if isinstance(value, int):
        return [str(value), value + 0.5, float(value), -1, 10 ** 20, True, None]
    if isinstance(value, float):
        return [str(value), True, -1.0, 1e20, None]
    if isinstance(value, str):
        return [2, "", LONG, None, "1e999999999", "0.1234567890123", "-5"]
    if isinstance(value, list):
        return [[], "not a list", (value * 300)[:300] if value else [None], None]
    if isinstance(value, dict):
        return [[], "not an object", None]
    return [None]


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list) and doc:
        yield prefix + (0,)
        yield from _paths(doc[0], prefix + (0,))


def _set(doc: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _corpus() -> Iterator[tuple[str, str, Any]]:
    for event_type, sample in sorted(SAMPLES.items()):
        doc = orjson.loads(encode(sample))
        yield event_type, "as sent", doc
        yield event_type, "unknown field", {**doc, "some_future_field": {"a": [1, 2]}}
        for path in _paths(doc):
            name = ".".join(map(str, path))
            variants = [(f"{name} = {str(v)[:30]!r}", _set(doc, path, v)) for v in _variants(_get(doc, path))]
            if isinstance(path[-1], str):
                variants.append((f"{name} missing", _set(doc, path, None, delete=True)))
            for what, variant in variants:
                if not any(et == event_type and what.startswith(prefix) for et, prefix in NOT_EXPRESSIBLE):
                    yield event_type, what, variant


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _edge_accepts(doc: Any) -> bool:
    try:
        decode_obj(doc)
        return True
    except SchemaError:
        return False


CORPUS = list(_corpus())


def test_the_corpus_is_large_and_has_both_verdicts():
    verdicts = [_edge_accepts(doc) for _, _, doc in CORPUS]
    assert len(CORPUS) > 1500 and 0 < sum(verdicts) < len(verdicts)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_edge_and_json_schema_agree(event_type):
    validator = jsonschema.Draft202012Validator(event_schema(event_type),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    disagreements = []
    for et, what, doc in CORPUS:
        if et != event_type:
            continue
        edge, schema = _edge_accepts(doc), validator.is_valid(doc)
        if edge != schema:
            disagreements.append(f"{what}: edge {'accepts' if edge else 'refuses'}, "
                                 f"schema {'accepts' if schema else 'refuses'}")
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements[:40])
