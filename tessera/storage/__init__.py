"""ClickHouse plumbing: the store (embedded chdb or a server), its DDL, and the rows the
event-log sink writes. Nothing here knows Kafka."""
