"""Webhooks for site systems: secrets, payloads, planning, signing and delivery.

A calendar change plans one outbox row (a `Reminder` with channel "webhook") per event and
subscription, inside the change's transaction, so a rolled-back change sends nothing. The
row's `WebhookDelivery` holds the event's body, frozen at that moment, and its message id:

- every attempt POSTs the same bytes with the same `webhook-id`, so a receiver de-duplicates
  retries; `webhook-timestamp` is the attempt's time and `webhook-signature` is
  "v1,<base64 HMAC-SHA256 of id.timestamp.body>" under the subscription's secret (the
  Standard Webhooks spec, signed with its reference library); for a grace period after the
  secret is rotated (WEBHOOK_SECRET_ROTATION_GRACE_SECONDS) it carries two, space-separated,
  under the new secret and the old one;
- 2xx is delivered; a timeout, a connection error, 408, 429 or 5xx is retried with the
  outbox's backoff, or after the answer's Retry-After if that is later (at most
  REMINDER_RETRY_AFTER_MAX_SECONDS); any other answer (a 3xx included: redirects are not
  followed) is final and the row is dead, listed for coordinators with the status, never the
  body;
- before each attempt the subscription must still be active, cover the participant's site,
  and its owner must still act as a site system there; otherwise the row is cancelled.

Bodies are blind-safe by construction: they name the participant by trial code, study id and
API id, and the visit by id, code, dates, status and version. Never an arm, contact details,
free-text reasons or anything clinical beyond the calendar itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.utils import timezone
from django.utils.crypto import salted_hmac
from standardwebhooks import Webhook

from participants.models import Participant
from scheduler.access import can_receive_events_at
from scheduler.bulkwrite import rows_add_new
from scheduler.models import Reminder, ScheduledVisit, WebhookDelivery, WebhookSubscription
from scheduler.outbox import receivers
from scheduler.outbox.dispatch import WEBHOOK_TASK, send_after_commit
from scheduler.outbox.errors import (
    NotNeeded,
    PermanentDeliveryError,
    TransientDeliveryError,
    retry_after,
)

WEBHOOK_CHANNEL = "webhook"
SITE_SYSTEM_AUDIENCE = "site_system"
Event = WebhookSubscription.Event
VISIT_EVENTS = frozenset(e for e in Event if e.startswith("visit."))
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
USER_AGENT = "trial-visit-scheduler-webhooks/1"


# ----------------------------------------------------------------------------------------
# Secrets


def secret_new() -> str:
    """A new signing secret in the Standard Webhooks form: whsec_ + base64 of 32 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _fernet() -> MultiFernet:
    keys = list(getattr(settings, "WEBHOOK_SECRET_KEYS", []))
    if not keys:
        derived = salted_hmac("scheduler.webhooks.secret-key", "", algorithm="sha256").digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(key) for key in keys])


def secret_encrypt(
    secret: str, *, previous: str | None = None, until: dt.datetime | None = None
) -> str:
    """The subscription's secrets as one encrypted value: the current one alone, or, after a
    rotation, with the previous one and the end of its grace period. The previous secret is
    as sensitive as the current one, so it is kept the same way (never in a column of its
    own, never in the audit trail)."""
    if previous is None:
        return _fernet().encrypt(secret.encode()).decode()
    if until is None:
        raise ValueError("a previous secret needs the end of its grace period")
    envelope = {"current": secret, "previous": previous, "previous_until": utc_text(until)}
    return _fernet().encrypt(json.dumps(envelope).encode()).decode()


def _secrets(token: str) -> dict[str, Any]:
    text = _fernet().decrypt(token.encode()).decode()
    if text.startswith("whsec_"):
        return {"current": text, "previous": None, "previous_until": None}
    envelope: dict[str, Any] = json.loads(text)
    return envelope


def secret_decrypt(token: str) -> str:
    """The current signing secret."""
    return str(_secrets(token)["current"])


def previous_secret_until(token: str) -> dt.datetime | None:
    """When the previous secret (the one before the last rotation) stops signing, if any."""
    until = _secrets(token)["previous_until"]
    return dt.datetime.fromisoformat(until) if until else None


def signing_secrets(token: str, *, now: dt.datetime) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and during the grace
    period after a rotation the previous one too, so a receiver still verifying with the old
    secret keeps accepting deliveries until it has switched."""
    envelope = _secrets(token)
    found = [str(envelope["current"])]
    until = envelope["previous_until"]
    if envelope["previous"] and until and now < dt.datetime.fromisoformat(until):
        found.append(str(envelope["previous"]))
    return found


# ----------------------------------------------------------------------------------------
# Receivers' URLs


def url_problem(url: str) -> str | None:
    """Why events may not be sent to `url`, in plain words; None when they may. The address
    a name resolves to is checked again at each delivery (`receivers.post`)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return "the URL needs a host"
    if parts.username or parts.password:
        return "put no credentials in the URL: receivers check the signature instead"
    if parts.scheme != "https":
        if parts.scheme != "http" or host not in LOOPBACK_HOSTS:
            return "events are only sent over https"
        if not getattr(settings, "WEBHOOK_ALLOW_HTTP_LOOPBACK", False):
            return "plain http is only allowed to this machine in development; use https"
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = 0
    if port == 0:
        return "the URL's port must be a number from 1 to 65535"
    return receivers.host_problem(host)


# ----------------------------------------------------------------------------------------
# Payloads


def utc_text(instant: dt.datetime | None) -> str | None:
    """An instant as ISO 8601 in UTC with a Z, to the second."""
    if instant is None:
        return None
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(day: dt.date | None) -> str | None:
    return day.isoformat() if day is not None else None


def participant_data(participant: Participant) -> dict[str, Any]:
    return {
        "id": participant.pk,
        "study_id": participant.study_id,
        "status": participant.status,
        "enrolled_at": utc_text(participant.enrolled_at),
        "enrolled_on": _day(participant.enrolled_on),
        "ended_on": _day(participant.ended_on),
    }


def visit_data(visit: ScheduledVisit) -> dict[str, Any]:
    return {
        "id": visit.pk,
        "code": visit.code,
        "status": visit.status,
        "target_date": _day(visit.target_date),
        "window_start": _day(visit.window_start),
        "window_end": _day(visit.window_end),
        "booked_start": utc_text(visit.booked_start),
        "booked_date": _day(visit.booked_date),
        "actual_date": _day(visit.actual_date),
        "version": visit.version,
    }


def event_payload(
    event_type: str,
    participant: Participant,
    visit: ScheduledVisit | None,
    occurred_at: dt.datetime,
) -> dict[str, Any]:
    """One event as a receiver gets it (Standard Webhooks' type / timestamp / data)."""
    data: dict[str, Any] = {
        "trial": participant.trial.code,
        "site": participant.site.code,
        "participant": participant_data(participant),
    }
    if visit is not None:
        data["visit"] = visit_data(visit)
    return {"type": event_type, "timestamp": utc_text(occurred_at), "data": data}


def _body(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


# ----------------------------------------------------------------------------------------
# Planning (inside the change's transaction)


def _subscribers(
    participant: Participant,
    event_type: str,
    known: dict[tuple[int, int, str], list[WebhookSubscription]],
) -> list[WebhookSubscription]:
    """The subscriptions that hear of `event_type` about `participant`; `known`: those found
    already in the same change, by trial, site and event (a site's amendment asks for each
    of its participants)."""
    key = (participant.trial_id, participant.site_id, event_type)
    if key not in known:
        known[key] = _subscribers_of(participant, event_type)
    return known[key]


def _subscribers_of(participant: Participant, event_type: str) -> list[WebhookSubscription]:
    candidates = WebhookSubscription.objects.filter(
        is_active=True, trial_id=participant.trial_id, sites=participant.site_id
    ).select_related("owner")
    return [
        subscription
        for subscription in candidates
        if event_type in subscription.events
        and can_receive_events_at(
            subscription.owner, trial_id=participant.trial_id, site_id=participant.site_id
        )
    ]


def announce_to_site_systems(
    event_type: str,
    participant: Participant,
    visits: Iterable[ScheduledVisit] = (),
    *,
    now: dt.datetime | None = None,
) -> None:
    """Plan one webhook per event and subscriber: `event_type` about each of `visits` (visit
    events) or about the participant (participant events).

    Call it inside the change's transaction, after the change is written, with the changed
    rows as they now are: the body is frozen here, the rows commit with the change or not at
    all, and are handed to a worker right after commit. A subscriber is a site system with an
    active subscription to this event at the participant's trial and site.
    """
    announce_to_site_systems_many(event_type, [(participant, list(visits))], now=now)


def announce_to_site_systems_many(
    event_type: str,
    changes: Sequence[tuple[Participant, Sequence[ScheduledVisit]]],
    *,
    now: dt.datetime | None = None,
) -> None:
    """`announce_to_site_systems` for many participants (a cohort enrolled, a site's
    amendment): the subscribers looked up once per trial, site and event, and the same
    statements for all of them as for one."""
    if event_type not in Event.values:
        raise ValueError(f"unknown webhook event {event_type!r}")
    known: dict[tuple[int, int, str], list[WebhookSubscription]] = {}
    heard: list[tuple[int, list[ScheduledVisit | None], list[WebhookSubscription]]] = []
    for participant, visits in changes:
        subjects: list[ScheduledVisit | None] = (
            list(visits) if event_type in VISIT_EVENTS else [None]
        )
        if not subjects:
            continue
        subscriptions = _subscribers(participant, event_type, known)
        if subscriptions:
            heard.append((participant.pk, subjects, subscriptions))
    if not heard:
        return
    now = now or timezone.now()
    # As stored now, with what the body names.
    fresh = Participant.objects.select_related("trial", "site").in_bulk(
        [participant_id for participant_id, _subjects, _subscriptions in heard]
    )
    # By (participant, target, rule): the subscription, the message id and the body.
    planned: dict[tuple[int, str, str], tuple[WebhookSubscription, str, str]] = {}
    rows: list[Reminder] = []
    for participant_id, subjects, subscriptions in heard:
        participant = fresh[participant_id]
        for visit in subjects:
            body = _body(event_payload(event_type, participant, visit, now))
            for subscription in subscriptions:
                target_key = f"visit:{visit.pk}" if visit else f"participant:{participant.pk}"
                # One row per event, subscription and state: the visit's version tells apart
                # two moves of the same visit.
                rule_code = f"wh{subscription.pk}:{event_type}"
                if visit is not None:
                    rule_code += f":v{visit.version}"
                planned[(participant.pk, target_key, rule_code)] = (
                    subscription,
                    f"msg_{uuid.uuid4().hex}",
                    body,
                )
                rows.append(
                    Reminder(
                        participant=participant,
                        visit=visit,
                        target_key=target_key,
                        rule_code=rule_code,
                        event=event_type,
                        channel=WEBHOOK_CHANNEL,
                        audience=SITE_SYSTEM_AUDIENCE,
                        due_at=now,
                        next_attempt_at=now,
                        enqueued_at=now,
                    )
                )
    # A row already planned for the very same event stays as it is (and keeps its id).
    rows_add_new(rows, Reminder)
    created = Reminder.objects.filter(
        channel=WEBHOOK_CHANNEL,
        due_at=now,
        participant__in=list(fresh),
        rule_code__in={rule_code for _participant, _key, rule_code in planned},
        webhook__isnull=True,
    ).values_list("pk", "participant_id", "target_key", "rule_code")
    deliveries: list[WebhookDelivery] = []
    for pk, participant_id, target_key, rule_code in created:
        key = (participant_id, target_key, rule_code)
        if key in planned:
            subscription, message_id, body = planned[key]
            deliveries.append(
                WebhookDelivery(
                    reminder_id=pk,
                    subscription=subscription,
                    message_id=message_id,
                    event_type=event_type,
                    body=body,
                    occurred_at=now,
                )
            )
    WebhookDelivery.objects.bulk_create(deliveries)
    send_after_commit(WEBHOOK_TASK, [d.reminder_id for d in deliveries])


# ----------------------------------------------------------------------------------------
# Delivery (one claimed row)


def signed_headers(
    *, secrets: list[str], message_id: str, timestamp: dt.datetime, body: bytes
) -> dict[str, str]:
    """Standard Webhooks headers; one "v1,<signature>" per secret, space-separated, the
    newest first (a receiver accepts the delivery if any one of them verifies)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(
            Webhook(secret).sign(message_id, timestamp, body) for secret in secrets
        ),
    }


def deliver_webhook(reminder: Reminder) -> str:
    """POST one event to its subscriber; returns the message id. Raises the outbox's errors:
    their messages name the status or the kind of failure, never the body or the URL."""
    delivery = WebhookDelivery.objects.select_related("subscription__owner").get(reminder=reminder)
    subscription = delivery.subscription
    participant = reminder.participant
    if not subscription.is_active:
        raise NotNeeded("the subscription was disabled before this event went out")
    if not subscription.sites.filter(pk=participant.site_id).exists():
        raise NotNeeded("the subscription no longer covers this site")
    if not can_receive_events_at(
        subscription.owner, trial_id=participant.trial_id, site_id=participant.site_id
    ):
        raise NotNeeded("the subscriber no longer acts as a site system at this site")
    problem = url_problem(subscription.url)
    if problem is not None:
        raise PermanentDeliveryError(f"the subscription's URL is refused: {problem}")
    body = delivery.body.encode()
    now = timezone.now()
    headers = signed_headers(
        secrets=signing_secrets(subscription.secret_encrypted, now=now),
        message_id=delivery.message_id,
        timestamp=now,
        body=body,
    )
    try:
        status, asked = receivers.post(subscription.url, data=body, headers=headers)
    except receivers.Refused as exc:
        raise PermanentDeliveryError(str(exc)) from None
    except receivers.Unreachable as exc:
        raise TransientDeliveryError(str(exc)) from None
    if 200 <= status < 300:
        return delivery.message_id
    if status in (408, 429) or status >= 500:
        wait = retry_after(asked, now=now)
        said = f" (Retry-After: {wait.total_seconds():.0f} s)" if wait is not None else ""
        raise TransientDeliveryError(f"the receiver answered HTTP {status}{said}", retry_after=wait)
    raise PermanentDeliveryError(f"the receiver answered HTTP {status}; it will not be retried")
