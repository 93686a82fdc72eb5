"""Events to an HTTP webhook (usage-limit alerts to a chat or paging system), off the hot path.

``notify`` only queues: a slow or failing receiver never holds up the worker that raised
the event. A sender task POSTs each event as JSON with the CloudEvents HTTP binary-mode
headers (``ce-id`` lets a receiver drop a repeat), retrying with backoff for a bounded
time; what still fails is logged and counted (``tessera_webhook_failures_total``), and a
full queue drops the newest with a warning: the events themselves stay on their topic.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import Counter

from tessera.schemas import Event, encode

log = logging.getLogger(__name__)
WEBHOOK_SENT = Counter("tessera_webhook_sent_total", "Events delivered to the webhook", ["kind"])
WEBHOOK_FAILURES = Counter("tessera_webhook_failures_total", "Events the webhook did not take", ["kind"])


class WebhookError(ValueError):
    pass


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"webhook URL {url!r}: give an http(s) URL, e.g. https://hooks.example.com/tessera")
    return url


class WebhookNotifier:
    def __init__(self, url: str, *, source: str, token: str = "", timeout_s: float = 5.0, attempts: int = 4,
                 max_queue: int = 1000):
        self.url, self.source, self.token = check_url(url), source, token
        self.timeout_s, self.attempts = timeout_s, attempts
        self.queue: asyncio.Queue[Event] = asyncio.Queue(max_queue)
        self._task: asyncio.Task | None = None

    def notify(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            WEBHOOK_FAILURES.labels(event.event_type).inc()
            log.warning("webhook queue full: %s %s not sent (it is on its topic)", event.event_type, event.event_id)

    async def __aenter__(self) -> "WebhookNotifier":
        self._task = asyncio.create_task(self._send_all())
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:   # deliver what is queued, for a while
            await asyncio.wait_for(self.queue.join(), self.timeout_s * self.attempts)
        except asyncio.TimeoutError:
            log.warning("webhook: %d event(s) not delivered before stopping", self.queue.qsize())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _headers(self, e: Event) -> dict[str, str]:
        h = {"content-type": "application/json", "ce-specversion": "1.0", "ce-id": e.event_id,
             "ce-source": self.source, "ce-type": e.event_type,
             "ce-time": e.event_time.isoformat().replace("+00:00", "Z")}
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h

    async def _send_all(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                e = await self.queue.get()
                try:
                    await self._send(http, e)
                finally:
                    self.queue.task_done()

    async def _send(self, http: aiohttp.ClientSession, e: Event) -> None:
        body = encode(e)
        for attempt in range(self.attempts):
            try:
                async with http.post(self.url, data=body, headers=self._headers(e), allow_redirects=False) as r:
                    if 200 <= r.status < 300:
                        WEBHOOK_SENT.labels(e.event_type).inc()
                        return
                    problem = f"HTTP {r.status}"
                    if 400 <= r.status < 500 and r.status not in (408, 429):
                        break          # the receiver refuses it: retrying will not help
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            await asyncio.sleep(min(0.5 * 2 ** attempt, 10.0))
        WEBHOOK_FAILURES.labels(e.event_type).inc()
        log.warning("webhook %s did not take %s %s (%s)", urlsplit(self.url).netloc, e.event_type, e.event_id,
                    problem)


__all__ = ["WebhookNotifier", "WebhookError", "check_url"]
