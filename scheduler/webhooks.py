"""Use cases of webhook subscriptions: a site system subscribes, rotates its signing secret,
and it (or whoever manages users, in the admin) disables the subscription. Sending lives in
`scheduler.outbox.webhooks`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from scheduler.access import can_receive_events_at
from scheduler.models import Reminder, WebhookSubscription
from scheduler.outbox.webhooks import (
    WEBHOOK_CHANNEL,
    previous_secret_until,
    secret_decrypt,
    secret_encrypt,
    secret_new,
    url_problem,
)
from trials.models import Site, Trial

User = Any  # settings.AUTH_USER_MODEL instance
EVENT_TYPES = tuple(WebhookSubscription.Event.values)


def _audited(instance: Any, by: User | None, reason: str) -> Any:
    instance._history_user = by
    instance._change_reason = reason
    return instance


def webhook_subscription_problems(
    *, owner: User, trial: Trial, sites: Sequence[Site], url: str, events: Sequence[str]
) -> dict[str, list[str]]:
    """Every reason a subscription would be refused, by field; empty when it would be made."""
    problems: dict[str, list[str]] = {}
    if not sites:
        problems["sites"] = ["name at least one site"]
    outside = [
        site.code
        for site in sites
        if not can_receive_events_at(owner, trial_id=trial.pk, site_id=site.pk)
    ]
    if outside:
        problems["sites"] = [
            f"{owner} does not act as a site system of {trial.code} at {', '.join(outside)}"
        ]
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if not events:
        problems["events"] = [f"name at least one event: {', '.join(EVENT_TYPES)}"]
    elif unknown:
        problems["events"] = [
            f"unknown event(s) {', '.join(unknown)}; the events are {', '.join(EVENT_TYPES)}"
        ]
    problem = url_problem(url)
    if problem is not None:
        problems["url"] = [problem]
    return problems


@transaction.atomic
def webhook_subscription_create(
    *,
    owner: User,
    trial: Trial,
    sites: Sequence[Site],
    url: str,
    events: Sequence[str],
    description: str = "",
    by: User,
) -> tuple[WebhookSubscription, str]:
    """Subscribe a site system to calendar events of a trial at some of its sites.

    Refused (a ValidationError naming each field) unless the owner acts as a site system of
    the trial at every site named, every event is one we send, and the URL is https (plain
    http only to this machine, in development). Returns the subscription and its signing
    secret, which is shown now and never again (only its encrypted form is kept).
    """
    events = list(dict.fromkeys(events))
    problems = webhook_subscription_problems(
        owner=owner, trial=trial, sites=sites, url=url, events=events
    )
    if problems:
        raise ValidationError(problems)
    secret = secret_new()
    subscription = WebhookSubscription(
        owner=owner,
        trial=trial,
        url=url,
        events=[e for e in EVENT_TYPES if e in events],
        description=description,
        secret_encrypted=secret_encrypt(secret),
    )
    _audited(subscription, by, "subscribed").save()
    subscription.sites.set(sites)
    return subscription, secret


@transaction.atomic
def webhook_subscription_disable(
    *, subscription: WebhookSubscription, by: User, reason: str = "disabled"
) -> WebhookSubscription:
    """Stop a subscription: nothing more is planned for it, and its deliveries not yet sent
    are cancelled. Kept (disabled) for the audit trail and the deliveries' history."""
    subscription = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    if not subscription.is_active:
        return subscription
    subscription.is_active = False
    subscription.disabled_at = timezone.now()
    _audited(subscription, by, reason).save(
        update_fields=["is_active", "disabled_at", "updated_at"]
    )
    Reminder.objects.filter(
        channel=WEBHOOK_CHANNEL,
        webhook__subscription=subscription,
        status__in=[Reminder.Status.PENDING, Reminder.Status.FAILED],
    ).update(status=Reminder.Status.CANCELLED, last_error="the subscription was disabled")
    return subscription


def webhook_subscriptions_disable(
    *, subscriptions: Iterable[WebhookSubscription], by: User, reason: str = "disabled"
) -> int:
    """Disable several subscriptions (an admin action); returns how many were active."""
    disabled = 0
    for subscription in subscriptions:
        if subscription.is_active:
            webhook_subscription_disable(subscription=subscription, by=by, reason=reason)
            disabled += 1
    return disabled


def rotation_grace() -> dt.timedelta:
    """How long the previous secret keeps signing after a rotation (default 24 hours)."""
    return dt.timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS)


@transaction.atomic
def webhook_subscription_rotate_secret(
    *,
    subscription: WebhookSubscription,
    by: User,
    reason: str = "signing secret rotated",
    now: dt.datetime | None = None,
) -> tuple[WebhookSubscription, str]:
    """Give a subscription a new signing secret; returns it (shown this once).

    Until the grace period ends (WEBHOOK_SECRET_ROTATION_GRACE_SECONDS after now) every
    delivery carries two signatures, under the new secret and the one it replaces, so the
    receiver can switch at any moment in between; then only the new one. Rotating again
    within the grace period drops the oldest: only the secret just replaced still signs.
    Audited (who, why); the secrets themselves are never in the audit trail. A disabled
    subscription sends nothing and is refused.
    """
    subscription = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    if not subscription.is_active:
        raise ValidationError(
            {"subscription": ["the subscription is disabled: create a new one instead"]}
        )
    if not reason.strip():
        raise ValidationError({"reason": ["say why the secret is rotated"]})
    now = now or timezone.now()
    secret = secret_new()
    subscription.secret_encrypted = secret_encrypt(
        secret,
        previous=secret_decrypt(subscription.secret_encrypted),
        until=now + rotation_grace(),
    )
    _audited(subscription, by, reason).save(update_fields=["secret_encrypted", "updated_at"])
    return subscription, secret


def webhook_subscription_previous_secret_until(
    *, subscription: WebhookSubscription
) -> dt.datetime | None:
    """When the secret replaced by the last rotation stops signing (None: never rotated)."""
    return previous_secret_until(subscription.secret_encrypted)


def webhook_subscription_secret(*, subscription: WebhookSubscription) -> str:
    """The signing secret, for the one answer that shows it: the creating request (and its
    replay under the same Idempotency-Key, whose first answer may never have arrived)."""
    return secret_decrypt(subscription.secret_encrypted)


def webhook_delivery_verify(
    *, url: str, headers: Mapping[str, str], body: bytes
) -> tuple[str, str] | None:
    """Check a delivery as a receiver at `url` would, with the current secret of an active
    subscription to that URL (the demo receiver, which is this app itself). Returns the event
    type and the webhook-id when a signature verifies (and the timestamp is recent), else
    None. Nothing else of the payload is returned: the receiver keeps no health data."""
    for subscription in WebhookSubscription.objects.filter(url=url, is_active=True):
        try:
            payload = Webhook(secret_decrypt(subscription.secret_encrypted)).verify(
                body, dict(headers)
            )
        except WebhookVerificationError:
            continue
        event_type = payload.get("type") if isinstance(payload, dict) else None
        if event_type in EVENT_TYPES:
            return str(event_type), str(dict(headers).get("webhook-id", ""))
    return None
