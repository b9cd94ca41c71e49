from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import translation


@pytest.fixture(autouse=True)
def english_afterwards() -> Iterator[None]:
    """The test client runs requests in this thread: a Japanese page leaves Japanese active.
    Every test here starts and ends with no language activated (settings.LANGUAGE_CODE)."""
    translation.deactivate()
    yield
    translation.deactivate()
