"""Streaming plumbing: Kafka clients and the Faust app factory, the edge that validates
every message, dead letters, batching, producers, metrics.

Nothing here knows about scheduling, forecasting or billing: the cores in ``tessera/``
hold the rules and ``agents/`` the loops. Modules that need Faust (``app``, ``topics``,
``runner``) are the only ones that import it, so plain producers and readers stay light.
"""
