"""Automated migration: the planner (evacuate, consolidate, rebalance under a disruption
budget) and the executor's state machine. Pure: no Kafka, no Faust; the migration agent
feeds it the live table and publishes its steps."""
