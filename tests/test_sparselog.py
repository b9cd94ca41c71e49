"""A lasting condition is said once a while, not once a request."""

from __future__ import annotations

from scheduler.sparselog import Sparse


def test_due_once_then_again_after_its_seconds() -> None:
    now = [1000.0]
    sparse = Sparse(60.0, clock=lambda: now[0])
    said = [sparse.due()]
    for step in (59.9, 0.1, 0.0):
        now[0] += step
        said.append(sparse.due())

    assert said == [True, False, True, False]
