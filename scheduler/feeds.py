"""Calendar feed tokens: create, revoke, regenerate, look up. Only hashes are stored."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db import transaction
from django.utils import timezone

from participants.models import Participant
from scheduler.models import CalendarFeed
from trials.models import Site

TOKEN_BYTES = 32  # 256 bits of randomness in every feed URL


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def feed_create(
    *, participant: Participant | None = None, site: Site | None = None, by: Any = None
) -> tuple[CalendarFeed, str]:
    """A new feed for a participant or a site. The token is returned once and never stored:
    show it to the user now (as the feed URL); it cannot be recovered later, only replaced."""
    if (participant is None) == (site is None):
        raise ValueError("a feed is for exactly one participant or one site")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    feed = CalendarFeed(
        participant=participant, site=site, token_sha256=_hash(token), created_by=by
    )
    feed._history_user = by  # type: ignore[attr-defined]
    feed._change_reason = "feed created"  # type: ignore[attr-defined]
    feed.save()
    return feed, token


@transaction.atomic
def feed_revoke(*, feed: CalendarFeed, by: Any = None) -> CalendarFeed:
    """Revoke a feed: its URL answers 404 from now on."""
    feed = CalendarFeed.objects.select_for_update().get(pk=feed.pk)
    if feed.revoked_at is None:
        feed.revoked_at = timezone.now()
        feed._history_user = by  # type: ignore[attr-defined]
        feed._change_reason = "feed revoked"  # type: ignore[attr-defined]
        feed.save(update_fields=["revoked_at"])
    return feed


@transaction.atomic
def feed_regenerate(*, feed: CalendarFeed, by: Any = None) -> tuple[CalendarFeed, str]:
    """Revoke a feed and give its owner a new one (e.g. after a URL leaked)."""
    feed_revoke(feed=feed, by=by)
    return feed_create(participant=feed.participant, site=feed.site, by=by)


def feed_by_token(*, token: str, kind: str) -> CalendarFeed | None:
    feeds = CalendarFeed.objects.select_related("participant__site", "site").filter(
        token_sha256=_hash(token), revoked_at__isnull=True
    )
    if kind == "participant":
        return feeds.filter(participant__isnull=False).first()
    if kind == "site":
        return feeds.filter(site__isnull=False).first()
    return None


def feed_path(*, feed: CalendarFeed, token: str) -> str:
    kind = "participant" if feed.participant_id else "site"
    return f"/feeds/{kind}/{token}.ics"
