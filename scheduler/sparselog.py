"""Saying a lasting condition now and then, not once a request: a cache that is away would
otherwise write a warning for every API call and every chunk of every feed."""

from __future__ import annotations

import time
from collections.abc import Callable


class Sparse:
    """`due()` is True at most once every `seconds` (per process): say it then."""

    def __init__(self, seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self.last is not None and now - self.last < self.seconds:
            return False
        self.last = now
        return True
