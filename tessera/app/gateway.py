"""The request gateway (``tessera gateway``): an HTTP front door for tenants' producers.

Kafka does not tell a consumer who produced a record, so a tenant with Kafka credentials
could submit requests in another tenant's name. Tenants get no Kafka credentials at all;
they POST workload requests here with a bearer token, the gateway authenticates the token,
sets the request's ``tenant`` to the token's tenant (a request naming another tenant is
refused), validates it at the edge, and publishes it with its own producer (on a secured
broker, the ``producer`` role, the only one its ACLs let write requests).

- ``POST /v1/requests``: a ``workload.request`` as JSON; ``event_id``, ``event_time``,
  ``event_type``, ``schema_version`` and ``tenant`` may be left out (the gateway fills
  them). 202 with ``{"request_id", "event_id"}`` once the broker has it; 400 (not JSON),
  401 (no or unknown token), 403 (another tenant, or a web page of another origin), 413
  (over 256 KiB), 422 (invalid, with the field and the problem), 503 (the broker did not
  take it: send it again with the same ``event_id``).
- ``GET /healthz``: 200 when the producer is connected.

Tokens are kept as SHA-256 digests in a JSON file (``{"<hex digest>": "<tenant>"}``);
``tessera gateway token TENANT`` makes one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from tessera.config import Settings
from tessera.schemas import MAX_MESSAGE_BYTES, SchemaError, WorkloadRequest, decode, new_event_id
from tessera.streams.produce import producer_for, send_events


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(tenant: str) -> tuple[str, str]:
    """A fresh token for ``tenant`` and the line that registers it (its digest only)."""
    token = secrets.token_urlsafe(32)
    return token, orjson.dumps({digest(token): tenant}).decode()


def load_tokens(path: str | Path) -> dict[str, str]:
    doc = orjson.loads(Path(path).read_bytes())
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise ValueError(f"{path}: expected a JSON object of token digest -> tenant")
    return doc


def _error(status: int, problem: str, field: str = "") -> web.Response:
    return web.json_response({"error": problem, "field": field}, status=status)


class Gateway:
    """The gateway's HTTP application around one long-lived producer."""

    def __init__(self, settings: Settings, tokens: dict[str, str], allowed_origins: frozenset[str] = frozenset()):
        self.settings, self.tokens, self.allowed_origins = settings, dict(tokens), allowed_origins
        self.producer: Any = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        app.router.add_post("/v1/requests", self.submit)
        app.router.add_get("/healthz", self.health)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    @contextlib.asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve in this event loop (port 0: any free one); yields the requests URL."""
        runner = web.AppRunner(self.app())
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            bound_host, bound_port = runner.addresses[0][:2]
            yield f"http://{bound_host}:{bound_port}/v1/requests"
        finally:
            await runner.cleanup()

    async def _start(self, _app: web.Application) -> None:
        self.producer = producer_for(self.settings)
        await self.producer.start()

    async def _stop(self, _app: web.Application) -> None:
        if self.producer is not None:
            await self.producer.stop()

    def tenant_of(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        presented = digest(auth[7:].strip())
        tenant = None
        for known, name in self.tokens.items():        # every digest compared, in constant time
            if hmac.compare_digest(known, presented):
                tenant = name
        return tenant

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": self.producer is not None})

    async def submit(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.allowed_origins:
            return _error(403, f"requests from web pages of {origin[:100]!r} are refused")
        tenant = self.tenant_of(request)
        if tenant is None:
            return _error(401, "a valid bearer token is required (Authorization: Bearer <token>)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"a request is at most {MAX_MESSAGE_BYTES:,} bytes")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"not valid JSON: {exc}")
        if not isinstance(doc, dict):
            return _error(400, "a workload request is a JSON object")
        if doc.setdefault("tenant", tenant) != tenant:
            return _error(403, f"this token submits for tenant {tenant!r} only", "tenant")
        doc.setdefault("event_type", "workload.request")
        doc.setdefault("schema_version", 1)
        doc.setdefault("event_id", new_event_id())
        doc.setdefault("event_time", datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
        try:
            event = decode(orjson.dumps(doc), allowed=("workload.request",))
        except SchemaError as exc:
            return _error(422, exc.problem, exc.field)
        except TypeError as exc:        # orjson will not write it back (nested too deep, integer too large)
            return _error(422, f"not a workload request: {exc}")
        assert isinstance(event, WorkloadRequest)
        try:
            await send_events(self.producer, self.settings, "requests", [event])
        except KafkaError as exc:
            return _error(503, f"the broker did not take the request ({type(exc).__name__}); send it again "
                               "(the same event_id is deduplicated)")
        return web.json_response({"request_id": event.request_id, "event_id": event.event_id}, status=202)
