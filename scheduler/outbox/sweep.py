"""The outbox's moving parts: the periodic sweep, and claiming and sending one row.

- `reminders_sweep` (Celery beat, every minute) hands due rows to workers: it re-queues rows
  whose message may have been lost (Redis flushed or restarted) and takes back rows stuck in
  "sending" (a worker killed mid-send): sent again as the same message where the receiver
  de-duplicates (email, webhooks, in-app), parked as "unknown" for a person otherwise (SMS),
  then enqueues one task per row after commit.
- `reminder_send`'s outcome is held through a database outage (`outcomes`), so an accepted
  message is recorded late rather than sent twice.
- `reminders_decide_unknown` is a person's decision on an unknown row (mark as sent, or send
  again), audited with who and why.
- `reminder_send` claims its row with a conditional UPDATE and sends only if it won, so a
  redelivered or duplicated message sends nothing twice. Transient failures are retried with
  exponential backoff by the sweep (no long ETAs on Redis); after the last attempt the row is
  dead and listed for coordinators.
- `reminders_send_batch` does the same for a batch of rows (one message per batch, see
  `dispatch.send_after_commit`): the rows whose receiver de-duplicates (email, in-app) are
  claimed in one conditional UPDATE … RETURNING, loaded in one query, sent one by one, and
  their outcomes written in one statement (each held in the batch's journal the moment it is
  known). Rows on any other channel (SMS) take the single-row path, claim, send and record
  one at a time, so a worker that dies mid-batch leaves at most the one row it was sending
  in doubt, and only that one becomes "unknown".
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from participants.models import Participant
from scheduler.engine.localtime import local_to_utc
from scheduler.engine.reminders import in_quiet_hours
from scheduler.models import CoordinatorNotification, Reminder
from scheduler.outbox.channels import deliver, mail_connection_per_batch
from scheduler.outbox.dispatch import KIND_ROWS, queue_for, send_after_commit, send_task_for
from scheduler.outbox.errors import (
    NotNeeded,
    OutcomeUnknown,
    PermanentDeliveryError,
    ProviderSilent,
    Superseded,
    TransientDeliveryError,
)
from scheduler.outbox.outcomes import BatchJournal, Outcome, outcome_record, outcomes_record
from scheduler.selectors import rows_share_related, visits_attach_procedures

logger = logging.getLogger(__name__)
Status = Reminder.Status


# Channels whose receiver drops a second copy of the same message, so a row whose worker
# died mid-send may be sent again: email (the same Message-ID, `<reminder-<id>@…>`, on every
# attempt; mail systems and clients that de-duplicate show it once), webhooks (the same
# webhook-id on every attempt, which Standard Webhooks receivers must use as the idempotency
# key; a receiver that times out is retried the same way anyway) and in-app notices (one per
# row, get_or_create). Everything else, SMS above all, has no such key.
DEDUPLICATING_CHANNELS = frozenset({"email", "webhook", "in_app"})
# Channels whose rows a batch claims all at once: a worker that dies mid-batch leaves them
# "sending", and after the lease each is sent (again) as the very same message. Webhooks have
# a task and a queue of their own (one row a message: a slow receiver holds one row, not a
# hundred); every other channel, SMS above all, is claimed row by row.
BATCH_CLAIMED_CHANNELS = frozenset({"email", "in_app"})
UNKNOWN_ERROR = (
    "the worker stopped while sending: the provider may or may not have accepted it; "
    "mark it as sent or send it again"
)


def _seconds(name: str, default: int) -> dt.timedelta:
    return dt.timedelta(seconds=getattr(settings, name, default))


def reminders_sweep(*, now: dt.datetime | None = None, batch: int = 1000) -> list[int]:
    """Hand due reminders to workers, at most `batch` of each kind (invites, reminders,
    webhooks), each to its kind's queue; returns the ids enqueued, in the order they fell due.
    Safe to run concurrently."""
    now = now or timezone.now()
    with transaction.atomic():
        # A worker killed mid-send leaves its row in "sending", and nobody knows whether the
        # provider took the message. After the timeout (the claim's lease), a row whose
        # receiver de-duplicates goes back to the queue (sent again as the very same message:
        # same Message-ID, same webhook-id); any other (SMS) waits as "unknown" for a
        # person's decision, never re-sent blindly.
        stuck = Reminder.objects.filter(
            status=Reminder.Status.SENDING,
            claimed_at__lt=now - _seconds("REMINDER_SENDING_TIMEOUT_SECONDS", 300),
        )
        # Usually none: one look (through reminder_sending_idx) instead of three updates.
        if stuck.exists():
            _take_back(stuck)
        requeue_before = now - _seconds("REMINDER_REQUEUE_AFTER_SECONDS", 120)
        waiting = (
            Reminder.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED],
                next_attempt_at__lte=now,
            )
            .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=requeue_before))
            .order_by("next_attempt_at")
        )
        # A batch per kind (per queue), so ten thousand due invites never fill the batch and
        # leave a due reminder for a later sweep.
        due = sorted(
            (
                row
                for rows_of_kind in KIND_ROWS.values()
                for row in waiting.filter(rows_of_kind).values_list(
                    "next_attempt_at", "pk", "channel", "event"
                )[:batch]
            ),
        )
        if due:
            Reminder.objects.filter(pk__in=[row[1] for row in due]).update(enqueued_at=now)
            # Published kind by kind, each to its queue, in the order the rows fell due.
            by_queue: dict[tuple[str, str], list[int]] = {}
            for _due_at, pk, channel, event in due:
                route = (send_task_for(channel), queue_for(channel=channel, event=event))
                by_queue.setdefault(route, []).append(pk)
            for (task_name, queue), ids in by_queue.items():
                send_after_commit(task_name, ids, queue=queue)
    return [row[1] for row in due]


def _take_back(stuck: Any) -> None:
    """Rows left "sending" past the lease: parked as unknown (SMS), dead after the last
    attempt, or pending again (sent again as the very same message)."""
    parked = stuck.exclude(channel__in=DEDUPLICATING_CHANNELS).update(
        status=Reminder.Status.UNKNOWN, last_error=UNKNOWN_ERROR
    )
    if parked:
        logger.warning("%d reminder(s) parked as unknown: their worker stopped mid-send", parked)
    # A row whose every attempt died with its worker stops being retried.
    stuck.filter(attempts__gte=getattr(settings, "REMINDER_MAX_ATTEMPTS", 5)).update(
        status=Reminder.Status.DEAD,
        last_error="the worker stopped while sending, on every attempt",
    )
    stuck.update(status=Reminder.Status.PENDING, enqueued_at=None)


def _claim(reminder_id: int, now: dt.datetime) -> bool:
    # healthchecks' pattern: the UPDATE is the lock; only one process can win it.
    won = Reminder.objects.filter(
        pk=reminder_id,
        status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED],
        next_attempt_at__lte=now,
    ).update(status=Reminder.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    return won == 1


def backoff(attempt: int) -> dt.timedelta:
    """1, 2, 4, 8 … minutes after failed attempt n, capped at an hour."""
    base = getattr(settings, "REMINDER_BACKOFF_BASE_SECONDS", 60)
    return dt.timedelta(seconds=min(base * 2 ** (attempt - 1), 3600))


def retry_at(reminder: Reminder, at: dt.datetime) -> dt.datetime:
    """When to try a participant's reminder again, `at` by the backoff: moved out of their
    quiet hours (planning keeps a reminder out of them; a retry must too) to the moment they
    end, unless the visit it reminds of begins by then: then at `at`, in the quiet hours,
    rather than not before the visit at all."""
    participant = reminder.participant
    start, end = participant.quiet_hours_start, participant.quiet_hours_end
    if reminder.audience != "participant" or start is None or end is None:
        return at
    zone = ZoneInfo(participant.timezone or participant.site.timezone)
    local = at.astimezone(zone)
    if not in_quiet_hours(local.time(), start, end):
        return at
    day = local.date() if local.time() < end else local.date() + dt.timedelta(days=1)
    quiet_over = local_to_utc(day, end, zone.key)
    visit = reminder.visit
    if visit is not None and visit.booked_start is not None and quiet_over >= visit.booked_start:
        return at
    return quiet_over


def reminder_send(reminder_id: int) -> str:
    """Claim a reminder and deliver it; returns what happened (for logs and tests)."""
    return _send_one(reminder_id)[0]


def _send_one(reminder_id: int) -> tuple[str, bool]:
    """`reminder_send`, and whether its provider stayed silent (the caller's next rows for
    the same provider had better wait)."""
    now = timezone.now()
    if not _claim(reminder_id, now):
        return "not claimed", False
    reminder = _load_batch([reminder_id]).get(reminder_id)
    if reminder is None:
        return "not claimed", False  # deleted since the claim (its participant, say)
    # The outcome is held until the row has it (outcomes.outcome_record): a database away
    # at this moment delays the record, never causes a second send. Outcomes other than
    # "sent" are written only while this claim still holds: a worker slower than the sending
    # timeout must not overwrite what the worker that re-claimed the row recorded.
    result, outcome, silent = _attempt(reminder, now)
    outcome_record(outcome)
    return result, silent


def _attempt(reminder: Reminder, claimed_at: dt.datetime) -> tuple[str, Outcome, bool]:
    """Deliver one claimed row: what happened, the outcome to record on it, and whether the
    provider stayed silent (ProviderSilent or OutcomeUnknown: it took the connection and did
    not answer in time)."""

    def outcome(status: str, **fields: Any) -> Outcome:
        return Outcome(reminder_id=reminder.pk, claimed_at=claimed_at, status=status, **fields)

    try:
        provider_id = deliver(reminder)
    except Superseded:
        cancelled = outcome(Status.CANCELLED, last_error="superseded by a newer change")
        return "superseded", cancelled, False
    except NotNeeded as exc:
        return "not needed", outcome(Status.CANCELLED, last_error=str(exc)[:2000]), False
    except PermanentDeliveryError as exc:
        return "dead", outcome(Status.DEAD, last_error=str(exc)[:2000]), False
    except OutcomeUnknown as exc:
        logger.warning("reminder %s parked as unknown: its provider did not answer", reminder.pk)
        return "unknown", outcome(Status.UNKNOWN, last_error=str(exc)[:2000]), True
    except Exception as exc:  # noqa: BLE001 - anything unexpected is retried, then dead
        # TransientDeliveryError, and anything a provider library raises that we did not
        # foresee: retrying with backoff and then giving up beats a row stuck in "sending".
        final = reminder.attempts >= getattr(settings, "REMINDER_MAX_ATTEMPTS", 5)
        error = str(exc) if isinstance(exc, TransientDeliveryError) else type(exc).__name__
        logger.warning(
            "reminder %s attempt %s failed: %s", reminder.pk, reminder.attempts, type(exc).__name__
        )
        wait = backoff(reminder.attempts)
        if isinstance(exc, TransientDeliveryError) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)  # the receiver said when: not before then
        failed = outcome(
            Status.DEAD if final else Status.FAILED,
            last_error=error[:2000],
            next_attempt_at=retry_at(reminder, claimed_at + wait),
        )
        return ("dead" if final else "failed"), failed, isinstance(exc, ProviderSilent)
    logger.info("reminder %s sent by %s", reminder.pk, reminder.channel)
    sent = outcome(Status.SENT, sent_at=timezone.now(), provider_message_id=provider_id)
    return "sent", sent, False


def _claim_batch(reminder_ids: list[int], now: dt.datetime) -> list[int]:
    # One conditional UPDATE for the whole batch; RETURNING says which rows this worker won.
    # Two workers claiming the same ids at once (a redelivered batch) get disjoint rows: on
    # Postgres the second waits for the first's row locks, then re-reads each row and finds
    # it "sending"; SQLite writes one statement at a time.
    table = connection.ops.quote_name(Reminder._meta.db_table)
    ids = ", ".join(["%s"] * len(reminder_ids))
    channels = ", ".join(["%s"] * len(BATCH_CLAIMED_CHANNELS))
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, claimed_at = %s, attempts = attempts + 1 "  # noqa: S608  # nosec B608  # names and placeholders, not values
            f"WHERE id IN ({ids}) AND status IN (%s, %s) AND next_attempt_at <= %s "
            f"AND channel IN ({channels}) RETURNING id",
            [
                Status.SENDING,
                stamp,
                *reminder_ids,
                Status.PENDING,
                Status.FAILED,
                stamp,
                *sorted(BATCH_CLAIMED_CHANNELS),
            ],
        )
        won = {row[0] for row in cursor.fetchall()}
    # In the batch's order (the order its rows fell due), whatever order RETURNING gave.
    return [pk for pk in reminder_ids if pk in won]


def reminders_send_batch(reminder_ids: Sequence[int]) -> dict[int, str]:
    """Claim and deliver a batch of reminders; returns what happened to each id (for logs and
    tests), "not claimed" for rows another attempt has (or had) and for rows not due.

    Email and in-app rows: one claim for all, one query to read them, one statement for their
    outcomes, each outcome journalled as soon as it is known (outcomes.BatchJournal) and held
    through a database outage like a single one. Other rows (SMS): `reminder_send`, one by
    one. The same rules as `reminder_send` hold for every row."""
    ids = list(dict.fromkeys(reminder_ids))
    if not ids:
        return {}
    now = timezone.now()
    results = dict.fromkeys(ids, "not claimed")
    claimed = _claim_batch(ids, now)
    one_by_one: list[int] = []
    if len(claimed) < len(ids):
        one_by_one = sorted(
            Reminder.objects.filter(
                pk__in=set(ids) - set(claimed),
                status__in=[Status.PENDING, Status.FAILED],
                next_attempt_at__lte=now,
            )
            .exclude(channel__in=BATCH_CLAIMED_CHANNELS)
            .values_list("pk", flat=True),
            key=ids.index,
        )
    if claimed:
        _send_claimed(claimed, now, results)
    # After the claimed rows are recorded, so a slow SMS provider never holds them "sending"
    # towards the end of their lease. A provider that stayed silent (TWILIO_TIMEOUT_SECONDS)
    # would keep every further row as long: they stay unclaimed, and the sweep hands them out
    # again after REMINDER_REQUEUE_AFTER_SECONDS, with no attempt spent.
    for pk in one_by_one:
        results[pk], silent = _send_one(pk)
        if silent:
            break
    return results


def _load_batch(claimed: list[int]) -> dict[int, Reminder]:
    """The claimed rows with everything their delivery reads (the texts and the invite), in
    at most six queries whatever the batch's size (one row's send reads it the same way):
    the rows with their visit and milestone (and its rule); their participants with site and
    trial; the definitions of their visits; the visits' procedures in the protocol's order
    (`visits_attach_procedures`: the rows, then their definitions). Participants and
    definitions are loaded once each and shared by every row that names them: a batch at
    09:00 is a few reminders each of many participants, of a dozen kinds of visit and
    procedure, and a model instance costs more than anything else a send does here (joined
    definitions and per-visit procedure managers were 60% of a batch's loading). A row whose
    participant was deleted since is left out, as a row deleted since the claim is."""
    rows = list(
        Reminder.objects.select_related("visit", "milestone__rule")
        .filter(pk__in=claimed)
        .order_by()
    )
    wanted = {row.participant_id for row in rows}
    wanted.update(row.visit.participant_id for row in rows if row.visit is not None)
    people = Participant.objects.select_related("site", "trial").order_by().in_bulk(wanted)
    loaded: dict[int, Reminder] = {}
    visits = []
    for row in rows:
        visit = row.visit
        if row.participant_id not in people or (
            visit is not None and visit.participant_id not in people
        ):
            continue
        row.participant = people[row.participant_id]
        if visit is not None:
            visit.participant = people[visit.participant_id]
            visits.append(visit)
        loaded[row.pk] = row
    if visits:
        rows_share_related(visits, "visit_definition")
        visits_attach_procedures(visits)
    return loaded


def _send_claimed(claimed: list[int], now: dt.datetime, results: dict[int, str]) -> None:
    by_id = _load_batch(claimed)
    journal = BatchJournal()
    outcomes = []
    silent = False
    # The disk the journal is on refused (full, failing): what this batch sent is known in
    # memory and recorded below all the same; nothing more is sent until it can be journalled.
    disk: OSError | None = None
    left = 0  # rows not tried because of it
    try:
        with mail_connection_per_batch():
            for pk in claimed:
                if pk not in by_id:
                    continue  # deleted since the claim (its participant, say): nothing to send
                if disk is not None:
                    results[pk], outcome = "failed", _not_tried(by_id[pk], now, JOURNAL_NOT_TRIED)
                    left += 1
                elif silent:
                    # The mail server stayed silent for an earlier row: each further one would
                    # wait EMAIL_TIMEOUT too, far past the batch's lease.
                    results[pk], outcome = "failed", _not_tried(by_id[pk], now)
                else:
                    results[pk], outcome, silent = _attempt(by_id[pk], now)
                outcomes.append(outcome)
                if disk is None:
                    try:
                        journal.add(outcome)
                    except OSError as refused:
                        disk = refused
        if disk is not None:
            logger.error(
                "outbox journal cannot be written (%s): %d outcome(s) of this batch recorded "
                "without it, %d row(s) left for a later try",
                os.strerror(disk.errno) if disk.errno else type(disk).__name__,
                len(outcomes) - left,
                left,
            )
        # Recorded, or each held in a file of its own through a database outage.
        recorded = outcomes_record(outcomes)
    except BaseException:
        # Something no one foresaw, or the worker stopping: what was sent stays journalled
        # for the next replay.
        journal.close(keep=True)
        raise
    # Not recorded (the database stayed away): the batch's file stays for the next replay
    # too, beside the files of their own (replaying an outcome twice changes nothing).
    journal.close(keep=not recorded)


NOT_TRIED = "not tried: the mail server did not answer an earlier message of its batch"
JOURNAL_NOT_TRIED = "not tried: the outbox journal could not be written"


def _not_tried(reminder: Reminder, claimed_at: dt.datetime, why: str = NOT_TRIED) -> Outcome:
    """A claimed row left for later without an attempt at the provider: failed, retried after
    the backoff of the attempts it had before this claim (a minute for a row never tried),
    and the claim not counted: a row held up by a silent provider or our own full disk must
    not run out of attempts without being tried."""
    return Outcome(
        reminder_id=reminder.pk,
        claimed_at=claimed_at,
        status=Status.FAILED,
        last_error=why,
        next_attempt_at=retry_at(reminder, claimed_at + backoff(max(reminder.attempts - 1, 1))),
        untried=True,
    )


RETRY_REASON = "retried by hand"


@transaction.atomic
def reminders_retry(
    *, reminders: Iterable[Reminder], by: Any = None, reason: str = RETRY_REASON
) -> int:
    """A person's retry of failed or dead reminders: due again now, attempts reset; returns
    how many were re-queued. Each re-queued row is saved on its own, attributed to `by` (the
    user; None only for the system itself) with `reason`, so the audit trail shows who sent
    it again and why. Rows in any other state are left as they are."""
    rows = list(
        Reminder.objects.select_for_update()
        .filter(
            pk__in=[r.pk for r in reminders],
            status__in=[Reminder.Status.FAILED, Reminder.Status.DEAD],
        )
        .order_by("pk")
    )
    now = timezone.now()
    for row in rows:
        row.status = Reminder.Status.PENDING
        row.attempts = 0
        row.next_attempt_at = now
        row.enqueued_at = None
        row.last_error = ""
        row._history_user = by  # type: ignore[attr-defined]
        row._change_reason = reason  # type: ignore[attr-defined]
        row.save(
            update_fields=["status", "attempts", "next_attempt_at", "enqueued_at", "last_error"]
        )
    return len(rows)


MARK_SENT = "mark_sent"
SEND_AGAIN = "send_again"
# The audit trail keeps the decision and its reason in one 100-character field.
DECISION_REASON_MAX = 80
DECISION_PREFIX = {MARK_SENT: "marked as sent: ", SEND_AGAIN: "sent again: "}


@transaction.atomic
def reminders_decide_unknown(
    *, reminders: Iterable[Reminder], decision: str, by: Any, reason: str
) -> int:
    """A person's decision on reminders whose outcome is unknown (their worker stopped
    mid-send on a channel without de-duplication): MARK_SENT records them as sent (the
    participant got the message; nothing goes out), SEND_AGAIN queues them again now, attempts
    reset. Each row is saved on its own, attributed to `by` with the decision and `reason`
    (required, at most DECISION_REASON_MAX characters), so the audit trail shows who decided
    what and why. Rows no longer unknown are left as they are; returns how many were decided.
    """
    if decision not in DECISION_PREFIX:
        raise ValueError(f"unknown decision {decision!r}")
    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("give a reason for the decision")
    if len(reason) > DECISION_REASON_MAX:
        raise ValueError(f"the reason is longer than {DECISION_REASON_MAX} characters")
    rows = list(
        Reminder.objects.select_for_update()
        .filter(pk__in=[r.pk for r in reminders], status=Reminder.Status.UNKNOWN)
        .order_by("pk")
    )
    now = timezone.now()
    for row in rows:
        if decision == MARK_SENT:
            row.status = Reminder.Status.SENT
            # When it went, as far as anyone knows: the attempt its worker stopped in.
            row.sent_at = row.claimed_at or now
            fields = ["status", "sent_at", "last_error"]
        else:
            row.status = Reminder.Status.PENDING
            row.attempts = 0
            row.next_attempt_at = now
            row.enqueued_at = None
            fields = ["status", "attempts", "next_attempt_at", "enqueued_at", "last_error"]
        row.last_error = ""
        row._history_user = by  # type: ignore[attr-defined]
        row._change_reason = DECISION_PREFIX[decision] + reason  # type: ignore[attr-defined]
        row.save(update_fields=fields)
    return len(rows)


@transaction.atomic
def notifications_mark_read(*, notifications: Iterable[CoordinatorNotification]) -> int:
    """Mark in-app reminders as read; returns how many were unread."""
    return CoordinatorNotification.objects.filter(
        pk__in=[n.pk for n in notifications], read_at__isnull=True
    ).update(read_at=timezone.now())
