"""Faust topic objects for every contract in schemas.topics, under the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import faust

from tessera.config import Settings
from tessera.schemas.topics import TOPICS, TopicSpec


@dataclass(frozen=True)
class Topics:
    """Declared topics by logical name: ``topics["requests"]``."""

    prefix: str
    by_name: dict[str, faust.TopicT]
    specs: dict[str, TopicSpec]

    def __getitem__(self, name: str) -> faust.TopicT:
        return self.by_name[name]

    def spec_of_topic(self, full_name: str) -> TopicSpec:
        """The contract of a full topic name (asked once per message by the sink: a dict)."""
        return self._spec_by_topic[full_name]

    @cached_property
    def _spec_by_topic(self) -> dict[str, TopicSpec]:
        return {t: self.specs[name] for name, ft in self.by_name.items() for t in ft.topics}


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    by_name = {}
    for spec in TOPICS:
        by_name[spec.name] = app.topic(
            spec.full_name(settings.topic_prefix),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partitions,
            replicas=settings.topic_replication_factor,
        )
    return Topics(settings.topic_prefix, by_name, {t.name: t for t in TOPICS})
