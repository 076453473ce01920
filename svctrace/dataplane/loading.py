"""Loading a big dump allocates objects it keeps (a few per line) and frees none: the cyclic garbage collector
would only rescan them again and again while they are made, so it waits until they are, and then looks at them once
(else the first collection after the load, in a later question, would: 8 ms at 20k Services)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
_MANY = 20000  # objects allocated (less those freed) that are worth looking at at once
T = TypeVar("T")


def keeps_objects(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn` with the cyclic garbage collector paused while it runs (and running again after, if it was)."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()
                if gc.get_count()[0] > _MANY:
                    gc.collect(1)

    return run
