"""The plain-Python twin of a jitted function: the same source, run entirely by CPython.

``dispatcher.py_func`` alone is not enough: its body calls other jitted helpers by their
module-level names, which would still run compiled. The twin rebuilds every jitted
function of the module (and of modules it imports them from) around a namespace in which
each of those names is the Python version, so nothing compiled is called. It is the
baseline the kernel benchmark compares against, and the reference the tests check the
kernel's placements against.
"""

from __future__ import annotations

import sys
from functools import cache
from types import FunctionType, ModuleType
from typing import Any, Callable


def python_twin(dispatcher: Any) -> Callable:
    py = dispatcher.py_func
    return _plain_namespace(sys.modules[py.__module__])[py.__name__]


@cache
def _plain_namespace(module: ModuleType) -> dict[str, Any]:
    ns = dict(vars(module))
    for name, value in list(ns.items()):
        py = getattr(value, "py_func", None)
        if py is None:
            continue
        if py.__module__ == module.__name__:
            ns[name] = FunctionType(py.__code__, ns, py.__name__, py.__defaults__, py.__closure__)
        else:
            ns[name] = _plain_namespace(sys.modules[py.__module__])[py.__name__]
    return ns
