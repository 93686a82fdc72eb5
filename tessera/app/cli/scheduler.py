"""``tessera pack``: the packing kernel offline, on JSON-lines files, for what-if analysis."""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tessera.scheduler.packing import PackRequest, PackResource


def add_parser(sub: Any, fmt: type) -> None:
    sp = sub.add_parser(
        "pack", formatter_class=fmt, help="run the packing kernel offline on JSON-lines files",
        description="""\
Place requests onto resources with the same Numba kernel the scheduler uses, minimizing
the price of newly opened resources, and print one outcome per request.

RES lines: {"id", "provider", "region", "vcpu", "memory_gib", "gpu", "price_per_hour",
            "tags": [...], "open": bool}   (free capacity now; open = already hosting work)
REQ lines: {"id", "tier", "replicas", "vcpu", "memory_gib", "gpu", "tags_required": [...],
            "regions": [...], "spread_min_providers": k}
Optional "storage_gib" on both adds a fourth dimension.""",
        epilog="example:\n  tessera pack --resources res.jsonl --requests req.jsonl --out alloc.jsonl --json")
    sp.add_argument("--resources", required=True, metavar="RES.jsonl")
    sp.add_argument("--requests", required=True, metavar="REQ.jsonl")
    sp.add_argument("--out", metavar="ALLOC.jsonl", help="write outcomes here instead of stdout")
    sp.add_argument("--json", action="store_true", help="print a JSON summary (cost, lower bound, timings)")
    sp.add_argument("--no-improve", action="store_true", help="skip the local-improvement passes")
    sp.set_defaults(fn=run)


class InputError(ValueError):
    pass


def _lines(path: str) -> list[tuple[int, dict]]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path} does not exist")
    out = []
    for n, line in enumerate(p.read_bytes().splitlines(), 1):
        if line.strip():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise InputError(f"{path}:{n}: each line must be a JSON object")
            out.append((n, doc))
    return out


def _num(doc: dict, key: str, where: str, default: float | None = 0.0) -> float:
    v = doc.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise InputError(f"{where}: {key!r} must be a non-negative number, got {v!r}")
    return float(v)


def load(res_path: str, req_path: str) -> tuple[list[PackRequest], list[PackResource]]:
    # Imported here: the packer loads Numba, which no other command needs to list itself.
    from tessera.scheduler.packing import PackRequest, PackResource
    res_docs, req_docs = _lines(res_path), _lines(req_path)
    storage = any("storage_gib" in d for _, d in res_docs + req_docs)
    dims = ("vcpu", "memory_gib", "gpu") + (("storage_gib",) if storage else ())
    resources = []
    for n, d in res_docs:
        where = f"{res_path}:{n}"
        try:
            price = Decimal(str(d["price_per_hour"]))
        except (KeyError, InvalidOperation):
            raise InputError(f"{where}: price_per_hour missing or not a number") from None
        if "id" not in d:
            raise InputError(f"{where}: id missing")
        free = tuple(_num(d, k, where) for k in dims)
        resources.append(PackResource(str(d["id"]), str(d.get("provider", "")), str(d.get("region", "")), free,
                                      free, price, frozenset(d.get("tags", [])), bool(d.get("open", False))))
    requests = []
    for n, d in req_docs:
        where = f"{req_path}:{n}"
        if "id" not in d:
            raise InputError(f"{where}: id missing")
        requests.append(PackRequest(
            str(d["id"]), str(d.get("tier", "silver")), int(d.get("replicas", 1)),
            tuple(float(d.get(k, 0) or 0) for k in dims), frozenset(d.get("tags_required", [])),
            frozenset(d.get("regions", [])), frozenset(d.get("providers", [])),
            int(d.get("spread_min_providers", 1)), seq=n))
    return requests, resources


def run(args: argparse.Namespace, _settings: Any) -> int:
    from tessera.scheduler.packing import pack_batch

    try:
        requests, resources = load(args.resources, args.requests)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    pack_batch(requests[:1], resources[:1])  # JIT compile (or load from cache) on a tiny input
    jit_s = time.perf_counter() - t0
    result = pack_batch(requests, resources, improve=not args.no_improve)
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    try:
        for q in requests:
            if q.id in result.placements:
                rec = {"request_id": q.id, "status": "placed", "code": "", "reason": "",
                       "placements": [{"resource_id": r, "replicas": k} for r, k in result.placements[q.id]]}
            else:
                why = result.rejected[q.id]
                rec = {"request_id": q.id, "status": "rejected", "code": why.code.value, "reason": why.text,
                       "placements": []}
            out.write(orjson.dumps(rec) + b"\n")
    finally:
        if args.out:
            out.close()
    if args.json:
        summary = {
            "requests": len(requests), "resources": len(resources), "placed": len(result.placements),
            "rejected": len(result.rejected), "opened": len(result.opened),
            "cost_of_opened_per_hour": format(result.cost, "f"), "lower_bound_per_hour": format(result.lower_bound, "f"),
            "gap": round(result.gap, 4), "kernel_ms": round(result.kernel_seconds * 1000, 3),
            "jit_compile_or_cache_load_ms": round(jit_s * 1000, 1),
        }
        sys.stderr.flush()
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr if not args.out else sys.stdout)
    return 0
