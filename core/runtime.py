"""Process-wide tuning for long-running services."""

from __future__ import annotations

import gc


def freeze_long_lived(*, collect: bool = False) -> int:
    """Move every object alive now out of the garbage collector's sight (`gc.freeze`).

    A service holds models, modules and catalogues for as long as it runs: millions of objects
    that a full collection walks for hundreds of milliseconds while every request in flight
    waits. Frozen, they are still freed by reference counting; only reference cycles among them
    are never collected, so call this after loading things that live long, not per request.
    `collect` first collects what is already garbage (at start-up). Returns the frozen count.
    """
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
