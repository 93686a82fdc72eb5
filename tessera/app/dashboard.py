"""``tessera dashboard``: a live web view of the running system (aiohttp).

The page polls ``/api/snapshot`` (``tessera.app.live.snapshot``: ClickHouse SQL over the
event log, and the workers' metrics when given) and redraws: the resource table, queue
and waits per tier, placements and rejections by reason, the cost rate by provider against
own-only and cheapest-partner, the forecast band against realised demand, provisioning
hints, migrations, partner bills month to date and alerts. Charts are inline SVG drawn by
the page's own script: no CDN, nothing fetched from elsewhere.

It serves four paths, GET only (HEAD too), on loopback by default. Listening beyond
loopback needs a password (HTTP Basic, user ``tessera``). Every response carries a strict
Content-Security-Policy (scripts and styles from this server only) and ``nosniff``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from importlib import resources as package_files
from typing import Any

import orjson
from aiohttp import web

from tessera.storage.store import AnalyticsStore

from . import live

log = logging.getLogger(__name__)
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC = {"/": ("dashboard.html", "text/html"), "/app.js": ("dashboard.js", "text/javascript"),
          "/app.css": ("dashboard.css", "text/css")}


class DashboardError(ValueError):
    pass


class Dashboard:
    """The dashboard's web server over one store (``start``/``stop`` in a running loop)."""

    def __init__(self, store: AnalyticsStore, database: str, *, host: str = "127.0.0.1", port: int = 8050,
                 metrics_urls: list[str] | None = None, password: str | None = None,
                 refresh_s: float = 2.0) -> None:
        if host not in LOOPBACK and not password:
            raise DashboardError(f"refusing to listen on {host} without a password: anyone who can reach it could "
                                 "read costs and bills (set TESSERA_DASHBOARD_PASSWORD)")
        self.store, self.database, self.host, self.port = store, database, host, port
        self.metrics_urls = metrics_urls or []
        self.password = password
        self.refresh_s = refresh_s
        self._cached: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._files = {path: (package_files.files("tessera.app").joinpath("static", name).read_bytes(), ctype)
                       for path, (name, ctype) in STATIC.items()}

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=1024)
        app.on_response_prepare.append(self._headers)      # every response, errors included
        for path in STATIC:
            app.router.add_get(path, self._static)
        app.router.add_get("/api/snapshot", self._snapshot)
        return app

    async def start(self) -> "Dashboard":
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.password and not self._authorised(request.headers.get("Authorization", "")):
            resp: web.StreamResponse = web.Response(status=401, text="password required\n",
                                                    headers={"WWW-Authenticate": 'Basic realm="tessera"'})
        else:
            resp = await handler(request)
        return resp

    @staticmethod
    async def _headers(_request: web.Request, resp: web.StreamResponse) -> None:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"

    def _authorised(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, given = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == "tessera" and hmac.compare_digest(given.encode(), (self.password or "").encode())

    async def _static(self, request: web.Request) -> web.Response:
        body, ctype = self._files[request.path]
        return web.Response(body=body, content_type=ctype, charset="utf-8")

    async def _snapshot(self, request: web.Request) -> web.Response:
        async with self._lock:        # one query round at a time, shared by every open page
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.refresh_s / 2:
                try:
                    doc = await asyncio.to_thread(live.snapshot, self.store, self.database, self.metrics_urls)
                    self._cached = (now, orjson.dumps(doc))
                except Exception as exc:          # a store that went away: say so on the page
                    log.warning("dashboard snapshot failed: %s", exc)
                    return web.Response(status=503, body=orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}),
                                        content_type="application/json", headers={"Cache-Control": "no-store"})
            body = self._cached[1]
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})
