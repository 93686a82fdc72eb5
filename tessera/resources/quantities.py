"""Units, normalized once at the edge: CPU to float cores, memory/storage to int bytes,
network to Gbps.

A string in Kubernetes' quantity grammar (``3920m``, ``16303140Ki``, ``4Gi``, ``1G``,
``100M``, ``12e6``) is read exactly as Kubernetes reads it, suffixes case-sensitive: ``m``
is milli, ``M`` mega, whatever the dimension (the tests hold it to the Kubernetes
client's own parser). Other strings are human units (``16 GiB``, ``1.5GB``, ``2 cores``,
``100 Mbps``); plain numbers are already in the base unit.

>>> parse_cpu("3920m"), parse_bytes("16303140Ki"), parse_bytes("1G"), parse_gbps("100Mbps")
(3.92, 16694415360, 1000000000, 0.1)
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tessera.schemas import GIB

_BINARY = {"ki": 1 << 10, "mi": 1 << 20, "gi": GIB, "ti": 1 << 40, "pi": 1 << 50, "ei": 1 << 60}
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18}
_CPU = {"": Decimal(1), "m": Decimal("0.001"), "u": Decimal("0.000001"), "n": Decimal("0.000000001")}
_NUM = r"(?P<num>[+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_BYTES_RE = re.compile(_NUM + r"\s*(?P<unit>[kKmMgGtTpPeE]i?)?(?P<b>[bB])?$")
_CPU_RE = re.compile(_NUM + r"\s*(?P<unit>[mun]|cores?|vcpus?)?$", re.IGNORECASE)
_NET_RE = re.compile(_NUM + r"\s*(?P<unit>[kmgt])?(?:bps|bit/s|b/s|bits?)?$", re.IGNORECASE)


_K8S_RE = re.compile(r"(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                     r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_K8S_SCALE = {"Ki": Decimal(1 << 10), "Mi": Decimal(1 << 20), "Gi": Decimal(GIB), "Ti": Decimal(1 << 40),
              "Pi": Decimal(1 << 50), "Ei": Decimal(1 << 60), "n": Decimal("1e-9"), "u": Decimal("1e-6"),
              "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6),
              "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}


def kubernetes_quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity's exact value, or None if ``text`` is not in its grammar.

    >>> kubernetes_quantity("100M"), kubernetes_quantity("100m"), kubernetes_quantity("1Ki")
    (Decimal('100000000'), Decimal('0.100'), Decimal('1024'))
    """
    m = _K8S_RE.fullmatch(text)
    if not m:
        return None
    num, suffix = Decimal(m.group("num")), m.group("suffix") or ""
    if suffix not in _K8S_SCALE:          # an exponent: e3, E-3 ("E" alone is exa)
        exponent = int(suffix[1:])
        if abs(exponent) > 30:
            raise QuantityError(f"quantity {text!r} is out of range")
        return num.scaleb(exponent)
    return num * _K8S_SCALE[suffix]


class QuantityError(ValueError):
    """A quantity that cannot be read; the message quotes it and says what was expected."""


def _number(text: str, what: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise QuantityError(f"{what} {text!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise QuantityError(f"{what} must be a finite, non-negative number, got {text!r}")
    return d


def parse_cpu(value: str | int | float | Decimal) -> float:
    """CPU to cores: ``"3920m"`` -> 3.92, ``"2"`` -> 2.0, ``"500u"`` -> 0.0005."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return float(_number(str(value), "cpu"))
    k8s = kubernetes_quantity(str(value).strip())
    if k8s is not None:
        return float(_number(str(k8s), "cpu"))
    m = _CPU_RE.match(str(value).strip())
    if not m:
        raise QuantityError(f"cpu quantity {value!r} not understood (examples: 2, 0.5, 3920m)")
    unit = (m.group("unit") or "").lower()
    scale = _CPU.get(unit, Decimal(1))
    return float(_number(m.group("num"), "cpu") * scale)


def parse_bytes(value: str | int | float | Decimal) -> int:
    """Memory/storage to bytes: ``"16303140Ki"``, ``"4Gi"``, ``"1G"``, ``"1.5 GiB"``, ``"512MB"``."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return int(_number(str(value), "size").to_integral_value())
    text = str(value).strip()
    k8s = kubernetes_quantity(text)
    if k8s is not None:
        return int(_number(str(k8s), "size").to_integral_value())
    m = _BYTES_RE.match(text)
    if not m:
        raise QuantityError(f"size {value!r} not understood (examples: 4Gi, 16303140Ki, 1G, 512 MB, 16 GiB)")
    unit = (m.group("unit") or "").lower()
    if unit == "m" and not m.group("b") and m.group("unit") == "m":
        # Kubernetes "m" is milli; fractional bytes are rounded below.
        scale = Decimal("0.001")
    elif unit.endswith("i"):
        scale = Decimal(_BINARY[unit])
    else:
        scale = Decimal(_DECIMAL[unit])
    return int((_number(m.group("num"), "size") * scale).to_integral_value())


def parse_gbps(value: str | int | float | Decimal) -> float:
    """Network bandwidth to Gbps: ``"10Gbps"``, ``"100 Mbps"``, ``25`` (already Gbps)."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return float(_number(str(value), "bandwidth"))
    m = _NET_RE.match(str(value).strip())
    if not m:
        raise QuantityError(f"bandwidth {value!r} not understood (examples: 10Gbps, 100 Mbps, 25)")
    unit = (m.group("unit") or "g").lower()
    scale = {"k": Decimal("0.000001"), "m": Decimal("0.001"), "g": Decimal(1), "t": Decimal(1000)}[unit]
    return float(_number(m.group("num"), "bandwidth") * scale)


def gib(value: float | str | Decimal) -> int:
    """A number of GiB (catalog ``MemoryGiB`` columns) to bytes."""
    return int((_number(str(value), "GiB") * GIB).to_integral_value())
