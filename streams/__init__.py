"""Streaming plumbing: the Faust app factory, topic declarations, the dead-letter path.

Nothing here knows about scheduling, forecasting or billing; agents/ hold the loops
and the plain modules in tessera/ hold the logic.
"""

from .app import create_app, faust_broker_credentials
from .edge import Decoded, decode_message
from .topics import Topics, declare_topics

__all__ = ["create_app", "faust_broker_credentials", "Decoded", "decode_message", "Topics", "declare_topics"]
