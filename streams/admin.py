"""Create Tessera's topics up front (idempotent), with their declared partition counts.

Creating topics before any worker subscribes avoids the race where a consumer group
forms before a topic exists and only notices it at the next metadata refresh.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

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
                topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
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
