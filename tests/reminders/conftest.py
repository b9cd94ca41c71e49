"""What the outbox tests share: each test's own outcome journal, and a fake Twilio (the
outside world) for the tests that send SMS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tests.reminders.fakes import FakeTwilioHttp


@pytest.fixture(autouse=True)
def journal(tmp_path: Path) -> Iterator[Path]:
    """Outcomes held through a database outage go to this test's own folder."""
    with override_settings(REMINDER_OUTCOME_JOURNAL_DIR=str(tmp_path / "journal")):
        yield tmp_path / "journal"


@pytest.fixture
def twilio() -> Iterator[Any]:
    FakeTwilioHttp.script = []
    FakeTwilioHttp.requests = []
    with override_settings(SMS_BACKEND="tests.reminders.fakes.FakeTwilioBackend"):
        yield FakeTwilioHttp
