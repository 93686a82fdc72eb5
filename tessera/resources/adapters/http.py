"""GET from a partner API: timeouts, a cap on response size, retries with jittered
exponential backoff that honour ``Retry-After``, and ETag revalidation."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Awaitable, Callable

import aiohttp

from ..model import AdapterError

log = logging.getLogger(__name__)
RETRYABLE = {429, 500, 502, 503, 504}
#: A partner page larger than this is refused (a listing of thousands of items fits).
MAX_RESPONSE_BYTES = 16 << 20
#: The longest wait a Retry-After may ask for; a longer one fails this poll instead.
MAX_RETRY_AFTER_S = 120.0


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date).

    >>> retry_after_s("7"), retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT",
    ...                                    datetime(2015, 10, 21, 7, 27, 30, tzinfo=timezone.utc))
    (7.0, 30.0)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - (now or datetime.now(timezone.utc))).total_seconds(), 0.0)


@dataclass
class HttpFetcher:
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.2
    headers: dict[str, str] = field(default_factory=dict, repr=False)   # may carry a bearer token
    max_bytes: int = MAX_RESPONSE_BYTES
    #: url -> (etag, body): a 304 answer reuses the cached body.
    _etags: dict[str, tuple[str, bytes]] = field(default_factory=dict, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)   # tests record waits

    async def get(self, session: aiohttp.ClientSession, url: str, *, send_headers: bool = True) -> bytes:
        """The body of a 200 (or the cached body on a 304). ``send_headers=False`` leaves out
        the configured headers (credentials) for a URL they must not reach."""
        delay = self.backoff_s
        last: str = ""
        for attempt in range(self.retries + 1):
            headers = dict(self.headers) if send_headers else {"Accept": self.headers.get("Accept", "*/*")}
            cached = self._etags.get(url)
            if cached:
                headers["If-None-Match"] = cached[0]
            wait: float | None = None
            try:
                async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                       allow_redirects=False) as r:
                    if r.status == 304 and cached:
                        return cached[1]
                    if r.content_length is not None and r.content_length > self.max_bytes:
                        raise AdapterError(f"{url}: response of {r.content_length:,} bytes exceeds "
                                           f"{self.max_bytes:,}")
                    body = await r.content.read(self.max_bytes + 1)
                    if len(body) > self.max_bytes:
                        raise AdapterError(f"{url}: response exceeds {self.max_bytes:,} bytes")
                    if r.status == 200:
                        etag = r.headers.get("ETag")
                        if etag:
                            self._etags[url] = (etag, body)
                        return body
                    last = f"HTTP {r.status} from {url}"
                    if r.status not in RETRYABLE:
                        raise AdapterError(last)
                    wait = retry_after_s(r.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = f"{type(exc).__name__} fetching {url}: {exc}"
            if attempt < self.retries:
                if wait is not None and wait > MAX_RETRY_AFTER_S:
                    raise AdapterError(f"{last}: asked to retry after {wait:.0f} s; trying again next poll")
                # Full jitter: pollers of many partners that failed together do not retry together.
                pause = wait if wait is not None else self._rng.uniform(0, delay)
                log.info("%s; retry %d/%d in %.2fs", last, attempt + 1, self.retries, pause)
                await self._sleep(pause)
                delay = min(delay * 2, 5.0)
        raise AdapterError(last + f" (after {self.retries} retries)")
