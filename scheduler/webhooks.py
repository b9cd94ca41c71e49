"""Use cases of webhook subscriptions: a site system subscribes, and it (or whoever manages
users, in the admin) disables the subscription. Sending lives in `scheduler.outbox.webhooks`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from scheduler.access import can_receive_events_at
from scheduler.models import Reminder, WebhookSubscription
from scheduler.outbox.webhooks import (
    WEBHOOK_CHANNEL,
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


def webhook_subscription_secret(*, subscription: WebhookSubscription) -> str:
    """The signing secret, for the one answer that shows it: the creating request (and its
    replay under the same Idempotency-Key, whose first answer may never have arrived)."""
    return secret_decrypt(subscription.secret_encrypted)
