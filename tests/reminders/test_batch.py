"""Batched dispatch (issue 13): one message, one claim, one outcome write for many rows.

The exactly-once rules of a single row hold for every row of a batch: a batch claimed twice
sends nothing twice; one row that cannot go does not hold up the others; outcomes are
journalled and held through a database outage like single ones. The concurrent claim on a
real Postgres is in tests/integration/test_batch_claim.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.db import OperationalError, connection
from django.db.models import F, QuerySet

from scheduler.calendars.events import UID_DOMAIN
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.outcomes import (
    BatchJournal,
    Outcome,
    journal_pending,
    outcomes_record,
    outcomes_replay,
)
from scheduler.outbox.sweep import _claim_batch, _load_batch, reminders_send_batch
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, booked_ahead, participant_for
from tests.reminders.fakes import CountingMailBackend

UTC = dt.UTC
pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 3, 20, 13, 0, tzinfo=UTC)
DUE = NOW - dt.timedelta(minutes=1)


@pytest.fixture
def enrolled(import_seed: Any) -> Any:
    """enrolled(n, **fields): n participants of the NIAMS trial at one site, enrolled, with an
    empty outbox."""
    version = import_seed("000")
    site = SiteFactory.create(code="nih", name="NIH Clinical Center", timezone="America/New_York")

    def make(count: int, **fields: Any) -> list[Any]:
        made = []
        with time_machine.travel(dt.datetime(2026, 1, 10, 12, tzinfo=UTC), tick=False):
            for _ in range(count):
                participant = participant_for(
                    version,
                    anchors={"day1": dt.date(2026, 2, 2)},
                    site=site,
                    **{"email": "p@example.org", **fields},
                )
                participant_enroll(participant=participant, on=dt.date(2026, 1, 10))
                made.append(participant)
        Reminder.objects.filter(participant__in=made).delete()
        return made

    return make


def rows(participants: list[Any], count: int, channel: str = "email") -> list[int]:
    """`count` due reminders, spread over every visit of `participants` in turn, each visit
    booked in a month (a reminder of a visit not booked, or begun, is not sent)."""
    visits = [v for p in participants for v in p.visits.order_by("target_date")]
    booked_ahead(visits)
    created = Reminder.objects.bulk_create(
        Reminder(
            participant=visits[n % len(visits)].participant,
            visit=visits[n % len(visits)],
            target_key=f"visit:{visits[n % len(visits)].pk}",
            rule_code=f"R{n}",
            event="before_visit",
            channel=channel,
            audience="participant",
            due_at=DUE,
            next_attempt_at=DUE,
        )
        for n in range(count)
    )
    return [row.pk for row in created]


def message_id(pk: int) -> str:
    return f"<reminder-{pk}@{UID_DOMAIN}>"


def claimed_and_sent(ids: list[int]) -> list[Outcome]:
    """The rows claimed at NOW (their first attempt) and the outcomes of their sends, each
    accepted by the provider."""
    Reminder.objects.filter(pk__in=ids).update(status="sending", claimed_at=NOW, attempts=1)
    return [
        Outcome(
            reminder_id=pk,
            claimed_at=NOW,
            status="sent",
            sent_at=NOW,
            provider_message_id=message_id(pk),
        )
        for pk in ids
    ]


def outcome_statements_refused(refused: list[str], *, times: int | None = None) -> Any:
    """A connection.execute_wrapper: the statement that records sent outcomes fails as when
    the database goes away, `times` times (None: always); each refusal is added to `refused`."""

    def database_away(execute: Any, sql: str, *args: Any) -> Any:
        if sql.startswith("WITH accepted") and (times is None or len(refused) < times):
            refused.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, *args)

    return database_away


def states(ids: list[int]) -> dict[int, tuple[str, int, str, str]]:
    return {
        pk: (status, attempts, error, provider_id)
        for pk, status, attempts, error, provider_id in Reminder.objects.filter(
            pk__in=ids
        ).values_list("pk", "status", "attempts", "last_error", "provider_message_id")
    }


def test_a_batch_is_sent_once_even_when_its_message_arrives_twice(
    enrolled: Any, mailoutbox: Any
) -> None:
    ids = rows(enrolled(1), 5)

    with time_machine.travel(NOW, tick=False):
        first = reminders_send_batch(ids)
        again = reminders_send_batch(ids)

    assert first == dict.fromkeys(ids, "sent")
    assert again == dict.fromkeys(ids, "not claimed")
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [message_id(pk) for pk in ids]
    assert states(ids) == {pk: ("sent", 1, "", message_id(pk)) for pk in ids}
    sent_at = set(Reminder.objects.filter(pk__in=ids).values_list("sent_at", flat=True))
    assert sent_at == {NOW}


def test_two_overlapping_batch_claims_win_disjoint_rows(enrolled: Any) -> None:
    ids = rows(enrolled(1), 8)

    first = _claim_batch(ids[:5], NOW)
    second = _claim_batch(ids[3:], NOW)

    assert (first, second) == (ids[:5], ids[5:])
    assert states(ids) == dict.fromkeys(ids, ("sending", 1, "", ""))


def test_a_batch_claims_only_due_pending_or_failed_rows(enrolled: Any) -> None:
    ids = rows(enrolled(1), 5)
    Reminder.objects.filter(pk=ids[0]).update(status="sent")
    Reminder.objects.filter(pk=ids[1]).update(status="unknown")
    Reminder.objects.filter(pk=ids[2]).update(next_attempt_at=NOW + dt.timedelta(seconds=1))
    Reminder.objects.filter(pk=ids[3]).update(status="failed")

    assert _claim_batch(ids, NOW) == ids[3:]


def test_a_batch_with_one_permanently_failing_row_sends_the_others_and_that_one_is_dead(
    enrolled: Any, mailoutbox: Any
) -> None:
    reachable = rows(enrolled(1), 3)
    unreachable = rows(enrolled(1, email=""), 1)
    ids = [reachable[0], unreachable[0], *reachable[1:]]

    with time_machine.travel(NOW, tick=False):
        results = reminders_send_batch(ids)

    assert results == {
        reachable[0]: "sent",
        unreachable[0]: "dead",
        reachable[1]: "sent",
        reachable[2]: "sent",
    }
    assert states(ids) == {
        **{pk: ("sent", 1, "", message_id(pk)) for pk in reachable},
        unreachable[0]: (
            "dead",
            1,
            "nobody to email: no address (or no guardian's, for a minor)",
            "",
        ),
    }
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [
        message_id(pk) for pk in reachable
    ]


def test_a_batch_sends_sms_rows_one_by_one_and_the_rest_together(
    enrolled: Any, mailoutbox: Any, twilio: Any
) -> None:
    [participant] = enrolled(1, phone="+15551234567", reminder_channels=["email", "sms"])
    emails = rows([participant], 2)
    Reminder.objects.filter(pk__in=emails).update(rule_code="E")  # distinct from the SMS rows'
    [sms] = rows([participant], 1, channel="sms")

    with time_machine.travel(NOW, tick=False):
        results = reminders_send_batch([emails[0], sms, emails[1]])

    assert results == {emails[0]: "sent", sms: "sent", emails[1]: "sent"}
    assert len(twilio.requests) == 1
    assert states([sms]) == {sms: ("sent", 1, "", "SM" + "1".zfill(32))}
    assert len(mailoutbox) == 2


@pytest.mark.parametrize("size", [10, 100])
def test_a_batch_costs_the_same_queries_whatever_its_size(
    enrolled: Any, mailoutbox: Any, django_assert_num_queries: Any, size: int
) -> None:
    # Rows over as many visits and participants as the size allows (10 rows: 10 visits of
    # one participant; 100 rows: every visit of four), so a query per visit would show.
    ids = rows(enrolled(1 if size == 10 else 4), size)

    with time_machine.travel(NOW, tick=False), django_assert_num_queries(7):
        # The claim; the rows with visit, milestone and rule; their participants with site and
        # trial; the visits' definitions; the visits' procedures; the procedures' definitions;
        # the outcomes.
        results = reminders_send_batch(ids)

    assert results == dict.fromkeys(ids, "sent")
    assert len(mailoutbox) == size


def test_a_batch_loads_each_participant_once_for_all_its_rows_and_visits(
    enrolled: Any, django_assert_num_queries: Any
) -> None:
    first, second = enrolled(2)
    ids = rows([first], 3) + rows([second], 2)
    visit_ids = list(Reminder.objects.filter(pk__in=ids).values_list("visit_id", flat=True))
    in_order = {
        pk: list(
            ScheduledVisit.objects.get(pk=pk)
            .procedures.order_by("procedure__order")
            .values_list("procedure__code", flat=True)
        )
        for pk in visit_ids
    }

    with django_assert_num_queries(5):
        loaded = _load_batch(ids)
        participants = {pk: row.participant for pk, row in loaded.items()}
        trials = {row.participant.trial.code for row in loaded.values()}
        procedures = {
            row.visit.pk: [p.procedure.code for p in row.visit.procedures_in_order]
            for row in loaded.values()
            if row.visit is not None
        }
        shared = [row.visit.participant is row.participant for row in loaded.values() if row.visit]
        # One definition instance per kind of visit and of procedure, however many rows name it.
        definitions = {
            row.visit.visit_definition_id: id(row.visit.visit_definition)
            for row in loaded.values()
            if row.visit is not None
        }
        same_definition = all(
            id(row.visit.visit_definition) == definitions[row.visit.visit_definition_id]
            for row in loaded.values()
            if row.visit is not None
        )
        procedure_instances: dict[int, set[int]] = {}
        for row in loaded.values():
            for planned in row.visit.procedures_in_order if row.visit else ():
                procedure_instances.setdefault(planned.procedure.pk, set()).add(
                    id(planned.procedure)
                )

    assert sorted(loaded) == sorted(ids)
    assert [participants[pk].pk for pk in ids] == [first.pk] * 3 + [second.pk] * 2
    assert len({id(participants[pk]) for pk in ids[:3]}) == 1
    assert len({id(participants[pk]) for pk in ids[3:]}) == 1
    assert trials == {first.trial.code}
    assert shared == [True] * 5
    assert procedures == in_order
    assert same_definition
    assert {len(ids) for ids in procedure_instances.values()} == {1}
    assert sum(len(codes) for codes in procedures.values()) > 0


def test_a_batch_leaves_out_the_rows_whose_participant_is_gone(
    enrolled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, gone = enrolled(2)
    ids = rows([kept], 2) + rows([gone], 2)
    real = QuerySet.in_bulk

    def in_bulk(self: QuerySet[Any], *args: Any, **kwargs: Any) -> Any:
        found = real(self, *args, **kwargs)
        # Deleted between reading the rows and reading their participants.
        return {pk: obj for pk, obj in found.items() if obj != gone}

    monkeypatch.setattr(QuerySet, "in_bulk", in_bulk)

    assert sorted(_load_batch(ids)) == sorted(ids[:2])


# Outside a transaction, as in a worker: a refused statement does not doom the next one.
@pytest.mark.django_db(transaction=True)
def test_a_batchs_outcomes_are_held_through_a_database_outage_then_recorded(
    enrolled: Any, journal: Path
) -> None:
    ids = rows(enrolled(1), 3)
    outcomes = claimed_and_sent(ids)
    refused: list[str] = []
    held_on_disk: list[int] = []

    with connection.execute_wrapper(outcome_statements_refused(refused, times=2)):
        assert outcomes_record(
            outcomes, sleep=lambda _s: held_on_disk.append(len(journal_pending()))
        )

    assert len(refused) == 2
    assert held_on_disk == [3, 3]  # each outcome in a file of its own while it waited
    assert journal_pending() == []
    assert states(ids) == {pk: ("sent", 1, "", message_id(pk)) for pk in ids}


# Outside a transaction, as in a worker; Postgres's read-only session.
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_outcomes_met_by_a_server_that_takes_no_writes_are_held_then_recorded(
    enrolled: Any, journal: Path
) -> None:
    """A failover's old primary: the worker's connection still reaches it, and it refuses
    writes (SQLSTATE 25006). The outcomes are held like through any outage; the retry's new
    connection reaches a server that takes them (here: the same one, the read-only setting
    having been the old connection's)."""
    ids = rows(enrolled(1), 2)
    outcomes = claimed_and_sent(ids)
    held_on_disk: list[int] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION default_transaction_read_only = on")
        recorded = outcomes_record(
            outcomes, sleep=lambda _s: held_on_disk.append(len(journal_pending()))
        )
    finally:
        connection.close()  # the read-only session goes with it, whatever happened

    assert recorded is True
    assert held_on_disk == [2]  # held once, recorded by the first retry
    assert journal_pending() == []
    assert states(ids) == {pk: ("sent", 1, "", message_id(pk)) for pk in ids}


def test_a_killed_batchs_journal_is_replayed_but_never_a_running_ones(
    enrolled: Any, journal: Path
) -> None:
    ids = rows(enrolled(1), 3)
    outcomes = claimed_and_sent(ids)
    running = BatchJournal()
    for outcome in outcomes[:2]:
        running.add(outcome)

    assert outcomes_replay() == 0  # its batch still runs (holds the lock)
    assert states(ids) == dict.fromkeys(ids, ("sending", 1, "", ""))
    running.close(keep=True)  # as when its worker is killed: the kernel drops the lock

    assert outcomes_replay() == 2

    assert states(ids) == {
        ids[0]: ("sent", 1, "", message_id(ids[0])),
        ids[1]: ("sent", 1, "", message_id(ids[1])),
        ids[2]: ("sending", 1, "", ""),
    }
    assert list(journal.iterdir()) == []
    assert outcomes_replay() == 0


def test_a_batch_leaves_no_journal_behind(enrolled: Any, journal: Path, mailoutbox: Any) -> None:
    ids = rows(enrolled(1), 3)

    with time_machine.travel(NOW, tick=False):
        reminders_send_batch(ids)

    assert list(journal.iterdir()) == []


def test_a_batch_of_superseded_invites_is_cancelled_in_one_statement(
    enrolled: Any, mailoutbox: Any, django_assert_num_queries: Any
) -> None:
    [participant] = enrolled(1)
    visits = list(participant.visits.order_by("target_date")[:3])
    ids = [
        Reminder.objects.create(
            participant=participant,
            visit=visit,
            target_key=f"visit:{visit.pk}",
            rule_code="INVITE",
            event="invite",
            channel="email",
            audience="participant",
            due_at=DUE,
            next_attempt_at=DUE,
            ical_sequence=visit.ical_sequence,
        ).pk
        for visit in visits
    ]
    # The visits have moved on since (rescheduled: a newer invite announces them).
    ScheduledVisit.objects.filter(pk__in=[v.pk for v in visits]).update(
        ical_sequence=F("ical_sequence") + 1
    )

    # The claim; the rows; their participant; the visits' definitions; the procedures and
    # their definitions; the three cancellations (one statement).
    with time_machine.travel(NOW, tick=False), django_assert_num_queries(7):
        results = reminders_send_batch(ids)

    assert results == dict.fromkeys(ids, "superseded")
    assert states(ids) == dict.fromkeys(ids, ("cancelled", 1, "superseded by a newer change", ""))
    assert mailoutbox == []


@pytest.fixture
def counting_mail(settings: Any) -> Any:
    settings.EMAIL_BACKEND = "tests.reminders.fakes.CountingMailBackend"
    CountingMailBackend.reset()
    return CountingMailBackend


def test_a_batch_sends_its_emails_over_one_connection(
    enrolled: Any, mailoutbox: Any, counting_mail: Any
) -> None:
    ids = rows(enrolled(2), 7)

    with time_machine.travel(NOW, tick=False):
        assert reminders_send_batch(ids) == dict.fromkeys(ids, "sent")
        # A second batch opens its own (the first was closed at its end).
        more = rows(enrolled(1), 2)
        assert reminders_send_batch(more) == dict.fromkeys(more, "sent")

    assert (counting_mail.opened, counting_mail.sends, len(mailoutbox)) == (2, 9, 9)


def test_a_connection_the_server_dropped_is_not_used_again(
    enrolled: Any, mailoutbox: Any, counting_mail: Any
) -> None:
    ids = rows(enrolled(1), 4)
    counting_mail.reset(refused={2})

    with time_machine.travel(NOW, tick=False):
        results = reminders_send_batch(ids)

    assert results == {ids[0]: "sent", ids[1]: "failed", ids[2]: "sent", ids[3]: "sent"}
    # The first connection carried the first message and failed at the second: the third
    # and fourth went over a new one.
    assert (counting_mail.opened, counting_mail.sends) == (2, 4)
    assert [m.extra_headers["Message-ID"] for m in mailoutbox] == [
        message_id(ids[0]),
        message_id(ids[2]),
        message_id(ids[3]),
    ]
    status, attempts, error, _ = states([ids[1]])[ids[1]]
    assert (status, attempts) == ("failed", 1)
    assert error.startswith("email not accepted: ")
