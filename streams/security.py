"""Client security (TLS, SASL) for the plain aiokafka clients, from Settings.

Kept apart from the Faust app (``app.py``) so that producers, admin clients and readers do
not import Faust.
"""

from __future__ import annotations

import ssl
from typing import Any

from tessera.config import Settings


def ssl_context(s: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    if s.kafka_ssl_certfile:
        ctx.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile or None)
    return ctx


def aiokafka_security_kwargs(s: Settings) -> dict[str, Any]:
    """The same security settings for plain aiokafka clients (producers, admin, tests)."""
    proto = s.kafka_security_protocol
    kw: dict[str, Any] = {"security_protocol": proto}
    if proto in {"SSL", "SASL_SSL"}:
        kw["ssl_context"] = ssl_context(s)
    if proto.startswith("SASL"):
        kw.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password,
        )
    return kw
