"""Dynamic scheduler: priority queues, the Numba packing kernel, blending, reservation.
Plain modules; the Faust agent is agents/scheduler.py."""
