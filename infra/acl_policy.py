"""Who may do what on a secured broker: Tessera's roles as Kafka ACLs.

Each service authenticates as its role (SCRAM-SHA-512 user of that name). Only
discovery writes resources and health samples, only the scheduler writes allocations,
producers write requests; every role reads only what its worker consumes. ``admin`` is
a super user (topic creation, ACLs).
"""

from __future__ import annotations

from tessera.schemas.topics import TOPICS, topic_spec

#: Role -> topics it writes / reads (logical names).
WRITES = {
    "producer": ("requests", "external-events", "usage"),
    "discovery": ("resources", "health", "usage"),
    "scheduler": ("allocations", "billing-feed", "dead-letters", "provisioning", "tuning", "checkpoints"),
    "billing": ("billing-lines", "alerts", "dead-letters", "checkpoints"),
    "migration": ("migrations", "billing-feed", "dead-letters"),
    "worker": ("dead-letters", "health", "resource-allocations", "demand", "forecasts"),
}
READS = {
    "producer": ("allocations",),
    "discovery": (),
    "scheduler": ("requests", "resources", "health", "forecasts", "alerts", "allocations", "agreements",
                  "billing-lines", "migrations", "checkpoints"),
    "billing": ("billing-feed", "usage", "agreements", "alerts", "billing-lines", "checkpoints"),
    "migration": ("resources", "health", "allocations", "migrations", "forecasts", "agreements", "billing-lines",
                  "checkpoints"),
    "worker": tuple(t.name for t in TOPICS),
}
ROLES = ("admin", *WRITES)


def acl_lines(prefix: str, app_id: str) -> list[str]:
    """The ACLs, one per line as infra/kafka/Acls.java reads them."""
    lines = []
    for role in WRITES:
        user = f"User:{role}"
        lines.append(f"{user} CLUSTER kafka-cluster LITERAL IDEMPOTENT_WRITE")
        for name in WRITES[role]:
            lines.append(f"{user} TOPIC {topic_spec(name).full_name(prefix)} LITERAL WRITE")
        for name in READS[role]:
            lines.append(f"{user} TOPIC {topic_spec(name).full_name(prefix)} LITERAL READ")
    # The scheduler: its consumer group and its transactional ids, per placement domain.
    lines += [f"User:scheduler GROUP {app_id}-scheduler- PREFIXED READ",
              f"User:scheduler TRANSACTIONAL_ID {app_id}-scheduler- PREFIXED WRITE"]
    # The migration agent: its transactional id (one step per transaction).
    lines += [f"User:migration TRANSACTIONAL_ID {app_id}-migration PREFIXED WRITE"]
    # The billing agents: their consumer group on the feed, and a transactional id per
    # shard (a shard's lines and checkpoints land together; a new owner fences the old).
    lines += [f"User:billing GROUP {app_id}-billing LITERAL READ",
              f"User:billing TRANSACTIONAL_ID {app_id}-billing- PREFIXED WRITE"]
    # Faust workers: their groups, and the changelog topics Faust creates for its tables.
    lines += [f"User:worker GROUP {app_id} PREFIXED READ",
              f"User:worker TOPIC {app_id}- PREFIXED ALL"]
    # Readers of a topic without a group (read_to_end, tail consumers) need nothing more.
    return lines
