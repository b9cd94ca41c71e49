"""Re-planning the reminders of many participants at once (`reminders_sync_many`, what a site's
amendment uses): the same rows as one participant at a time, in the same queries for three
participants as for one."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from participants.models import Participant
from scheduler.models import Reminder
from scheduler.outbox.plan import (
    NOT_REMINDERS,
    WELCOME_EVENT,
    reminders_sync,
    reminders_sync_many,
)
from scheduler.services import participant_enroll, participant_withdraw
from tests.factories import SiteFactory, participant_for

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC)


@pytest.fixture
def participants(import_seed: Any, django_user_model: Any) -> list[Participant]:
    """Three at sites in three zones, with different channels; the third withdrawn later."""
    version = import_seed("000")
    people = []
    with time_machine.travel(NOW, tick=False):
        for n, (zone, channels) in enumerate(
            [
                ("America/New_York", ["email", "sms"]),
                ("Europe/Berlin", ["email"]),
                ("Asia/Tokyo", ["sms"]),
            ]
        ):
            participant = participant_for(
                version,
                anchors={"day1": dt.date(2026, 2, 2) + dt.timedelta(days=3 * n)},
                site=SiteFactory.create(timezone=zone),
                email=f"p{n}@example.org",
                phone=f"+1555123456{n}",
                reminder_channels=channels,
            )
            participant_enroll(
                participant=participant,
                on=dt.date(2026, 1, 10),
                arm=version.arm_set.get(code="ANI"),
            )
            people.append(participant)
    return people


def _planned(participants: list[Participant]) -> Any:
    """The reminders the calendar's plan owns (not invites, welcomes or webhooks), still to
    come."""
    return Reminder.objects.filter(
        participant__in=participants, due_at__gt=NOW + dt.timedelta(days=1)
    ).exclude(event__in=NOT_REMINDERS)


def _rows(participants: list[Participant]) -> list[tuple[Any, ...]]:
    return sorted(
        _planned(participants).values_list(
            "participant_id", "target_key", "rule_code", "channel", "due_at", "status"
        )
    )


def test_many_at_once_writes_the_rows_one_at_a_time_writes(participants: list[Participant]) -> None:
    with time_machine.travel(NOW + dt.timedelta(days=1), tick=False):
        expected = _rows(participants)
        assert len(expected) > 30
        # Lose every pending reminder, then plan them again both ways.
        _planned(participants).filter(status="pending").delete()
        reminders_sync_many(participants)
        together = _rows(participants)
        _planned(participants).filter(status="pending").delete()
        for participant in participants:
            reminders_sync(participant)
        assert _rows(participants) == together == expected


def test_many_at_once_cancels_what_no_longer_applies(
    participants: list[Participant], django_user_model: Any
) -> None:
    withdrawn = participants[2]
    with time_machine.travel(NOW + dt.timedelta(days=1), tick=False):
        participant_withdraw(
            participant=withdrawn,
            on=dt.date(2026, 1, 11),
            by=django_user_model.objects.create_user("coordinator"),
            reason="moved away",
        )
        # The withdrawal cancelled them; make them pending again, as if it had not.
        Reminder.objects.filter(participant=withdrawn).update(status="pending")
        reminders_sync_many(participants)
        assert set(
            Reminder.objects.filter(participant=withdrawn, event__in=[WELCOME_EVENT]).values_list(
                "status", flat=True
            )
        ) == {"cancelled"}
        assert set(_planned([withdrawn]).values_list("status", flat=True)) == {"cancelled"}
        assert Reminder.objects.filter(participant=participants[0], status="pending").count() > 10


def test_three_participants_take_the_queries_of_one(participants: list[Participant]) -> None:
    with time_machine.travel(NOW + dt.timedelta(days=1), tick=False):
        _planned(participants).filter(status="pending").delete()
        with CaptureQueriesContext(connection) as one:
            reminders_sync_many(participants[:1])
        with CaptureQueriesContext(connection) as three:
            reminders_sync_many(participants)

    # Reads and updates alike; SQLite splits a long INSERT under its limit on parameters.
    def kinds(queries: CaptureQueriesContext) -> list[str]:
        return [q["sql"].split()[0] for q in queries.captured_queries if "INSERT" not in q["sql"]]

    assert kinds(one) == kinds(three) == ["SELECT"] * 6
    assert sum("INSERT" in q["sql"] for q in one.captured_queries) == 1
