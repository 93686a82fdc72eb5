"""Create Tessera's topics up front (idempotent), with their declared partition counts.

Creating topics before any worker subscribes avoids the race where a consumer group
forms before a topic exists and only notices it at the next metadata refresh.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from tessera.config import Settings
from tessera.schemas.topics import TOPICS

from .security import aiokafka_security_kwargs


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; return the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **aiokafka_security_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=t.full_name(settings.topic_prefix),
                num_partitions=t.partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs={**({"cleanup.policy": "compact"} if t.compacted else {}), **dict(t.configs)},
            )
            for t in TOPICS
            if t.full_name(settings.topic_prefix) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another worker won the race; fine
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def wait_for_coordinators(settings: Settings, groups: Iterable[str] = (), transactional_ids: Iterable[str] = (),
                                timeout_s: float = 90.0) -> None:
    """Return once the broker can name a coordinator for each consumer group and
    transactional id.

    A fresh broker creates ``__consumer_offsets`` and ``__transaction_state`` on first use
    and answers COORDINATOR_NOT_AVAILABLE meanwhile; clients that join then log errors
    ("GroupCoordinatorNotAvailable", "Marking the coordinator dead") and retry. Waiting here
    first keeps those out of a start-up that is otherwise fine."""
    wanted = [(g, 0) for g in groups] + [(t, 1) for t in transactional_ids]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **aiokafka_security_kwargs(settings))
    await admin.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        for key, kind in wanted:
            while True:
                try:
                    await admin.find_coordinator(key, kind)
                    break
                except KafkaError as exc:
                    if not exc.retriable or loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
    finally:
        await admin.close()
