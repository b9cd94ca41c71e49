"""A batch of outbox rows is claimed once under concurrency, on a real Postgres (issue 13).

Four threads, each with its own connection, take the same batch at the same instant (a
message redelivered to several workers) or overlapping ones: every row is won by exactly one
of them and sent once.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from scheduler.models import Reminder
from scheduler.outbox.sweep import _claim_batch, reminders_send_batch
from scheduler.services import participant_enroll
from tests.factories import booked_ahead, participant_for

THREADS = 4


def _due_rows(import_seed: Callable[[str], Any], count: int) -> list[int]:
    participant = participant_for(
        import_seed("000"),
        anchors={"day1": dt.date(2026, 2, 2)},
        birth_date=dt.date(1980, 1, 1),
        email="p@example.org",
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    Reminder.objects.filter(participant=participant).delete()
    visits = list(participant.visits.order_by("target_date"))
    booked_ahead(visits)  # a reminder of a visit not booked is not sent
    due = timezone.now() - dt.timedelta(minutes=1)
    created = Reminder.objects.bulk_create(
        Reminder(
            participant=participant,
            visit=visits[n % len(visits)],
            target_key=f"visit:{visits[n % len(visits)].pk}",
            rule_code=f"R{n}",
            event="before_visit",
            channel="email",
            audience="participant",
            due_at=due,
            next_attempt_at=due,
        )
        for n in range(count)
    )
    return [row.pk for row in created]


def _at_once(work: Callable[[int], Any]) -> list[Any]:
    start = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def run(number: int) -> None:
        try:
            start.wait()
            results[number] = work(number)
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertion
            results[number] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_batch_claim_overlapping_claims_at_once_win_disjoint_rows(
    import_seed: Callable[[str], Any],
) -> None:
    assert connection.vendor == "postgresql"
    ids = _due_rows(import_seed, 100)
    now = timezone.now()
    # Thread n claims ids[20n : 20n + 40]: each overlaps the next by 20 rows.
    claims = _at_once(lambda n: _claim_batch(ids[20 * n : 20 * n + 40], now))

    won = [pk for claim in claims for pk in claim]
    assert sorted(won) == ids[:100]  # every row won once, by one claim only
    assert Counter(Reminder.objects.filter(pk__in=ids).values_list("status", "attempts")) == {
        ("sending", 1): 100
    }


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_batch_claim_one_batch_delivered_to_four_workers_at_once_sends_each_row_once(
    import_seed: Callable[[str], Any],
) -> None:
    assert connection.vendor == "postgresql"
    ids = _due_rows(import_seed, 100)
    mail.outbox = []

    results = _at_once(lambda _n: reminders_send_batch(ids))

    assert not any(isinstance(result, Exception) for result in results), results
    sent_by = Counter(pk for result in results for pk, what in result.items() if what == "sent")
    assert sent_by == dict.fromkeys(ids, 1)
    message_ids = [message.extra_headers["Message-ID"] for message in mail.outbox]
    assert len(message_ids) == 100
    assert len(set(message_ids)) == 100
    assert Counter(Reminder.objects.filter(pk__in=ids).values_list("status", "attempts")) == {
        ("sent", 1): 100
    }
