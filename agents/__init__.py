"""Faust agents: thin loops that decode at the edge, call a core, and emit.

Each module has ``register(app, topics, settings, ...)`` which declares its agents on
the given app, so that workers, tests and the demo can build apps with any prefix.
"""

AVAILABLE = ("event-log", "resources")
