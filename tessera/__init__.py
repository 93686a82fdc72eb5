"""Tessera: blends own and partner compute into one pool, places work where it costs least."""

__version__ = "0.1.0"
