"""Workers: thin loops that decode at the edge, call a core, and emit.

The Faust agents register themselves with the worker assembly (``worker.py``) when
their module is imported; the plain aiokafka workers (``scheduler``, ``billing``) are
classes the CLI runs as services of their own.
"""

from . import event_log, forecast, resources  # noqa: F401  (each registers its agents)
