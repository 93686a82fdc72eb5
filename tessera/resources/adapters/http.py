"""GET with timeouts, retries with capped exponential backoff, and ETag revalidation."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp

from ..model import AdapterError

log = logging.getLogger(__name__)
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class HttpFetcher:
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.2
    headers: dict[str, str] = field(default_factory=dict)
    #: url -> (etag, body): a 304 answer reuses the cached body.
    _etags: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    async def get(self, session: aiohttp.ClientSession, url: str) -> bytes:
        delay = self.backoff_s
        last: str = ""
        for attempt in range(self.retries + 1):
            headers = dict(self.headers)
            cached = self._etags.get(url)
            if cached:
                headers["If-None-Match"] = cached[0]
            try:
                async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as r:
                    if r.status == 304 and cached:
                        return cached[1]
                    body = await r.read()
                    if r.status == 200:
                        etag = r.headers.get("ETag")
                        if etag:
                            self._etags[url] = (etag, body)
                        return body
                    last = f"HTTP {r.status} from {url}"
                    if r.status not in RETRYABLE:
                        raise AdapterError(last)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = f"{type(exc).__name__} fetching {url}: {exc}"
            if attempt < self.retries:
                log.info("%s; retry %d/%d in %.1fs", last, attempt + 1, self.retries, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AdapterError(last + f" (after {self.retries} retries)")
