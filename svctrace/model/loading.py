"""The one home of svctrace's pauses of the cyclic garbage collector.

Loading a big dump or snapshot, or simulating a cluster, allocates objects by the hundred thousand and frees almost
none: the collector would only rescan them again and again while they are made (a third of the time of a 10k-Service
load), so it waits until they are made. A load that hands its objects to later questions then looks at them once
(else the first collection after the load, in a later question, would: 8 ms at 20k Services); a command that is
about to end can skip that look (`look_after=False`)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
_MANY = 20000  # objects allocated (less those freed) that are worth looking at at once
T = TypeVar("T")


@contextmanager
def gc_paused(*, look_after: bool = True) -> Iterator[None]:
    """The cyclic garbage collector paused inside the block (and running again after, if it was)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            if look_after and gc.get_count()[0] > _MANY:
                gc.collect(1)


def keeps_objects(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn` run with the collector paused (`gc_paused`)."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with gc_paused():
            return fn(*args, **kwargs)

    return run
