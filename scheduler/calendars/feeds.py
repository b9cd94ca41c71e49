"""Subscribable calendar feeds: capability tokens (only hashes stored) and the feeds' text.

A participant feed holds that participant's visits and participant-facing milestones; a site
feed holds the site's visits, naming participants by trial and study id only. Both hold every
visit, history included: done ones where they happened, missed and cancelled ones as CANCELLED
(see `scheduler.calendars.events`), so a subscribed calendar never keeps a stale copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from participants.models import Participant
from scheduler.access import feed_trials_at, site_today
from scheduler.calendars.events import milestone_event
from scheduler.calendars.ical import CALENDAR_TAIL, calendar_head, event_text, stamp_text
from scheduler.calendars.rendered import FeedCache, render_mark, visit_texts
from scheduler.models import CalendarFeed, ScheduledMilestone, ScheduledVisit
from trials.models import Site, Trial

TOKEN_BYTES = 32  # 256 bits of randomness in every feed URL


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def feed_create(
    *,
    participant: Participant | None = None,
    site: Site | None = None,
    trials: Iterable[Trial] = (),
    by: Any = None,
) -> tuple[CalendarFeed, str]:
    """A new feed for a participant or a site (showing the visits of `trials` there: those
    its issuer changes calendars of, `access.feed_trials_at`). The token is returned once
    and never stored: show it to the user now (as the feed URL); it cannot be recovered
    later, only replaced."""
    if (participant is None) == (site is None):
        raise ValueError("a feed is for exactly one participant or one site")
    trials = list(trials)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    feed = CalendarFeed(
        participant=participant, site=site, token_sha256=_hash(token), created_by=by
    )
    feed._history_user = by  # type: ignore[attr-defined]
    feed._change_reason = "feed created"  # type: ignore[attr-defined]
    feed.save()
    if trials:
        feed.trials.set(trials)
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
    trials = list(feed.trials.all())
    if feed.site is not None and not trials and by is not None:
        # A feed left showing nothing (its issuer gone, migration 0015): the new one shows
        # what one issued by `by` would, not nothing again.
        trials = list(feed_trials_at(by, feed.site))
    return feed_create(participant=feed.participant, site=feed.site, trials=trials, by=by)


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


def feed_public_url(*, feed: CalendarFeed, token: str) -> str:
    """The feed's full URL, for a person to subscribe to (settings.PUBLIC_URL is the base)."""
    return settings.PUBLIC_URL.rstrip("/") + feed_path(feed=feed, token=token)


def participant_feed_ical(
    participant: Participant, *, stamp: dt.datetime, texts_cache: FeedCache | None = None
) -> bytes:
    return b"".join(participant_feed_chunks(participant, stamp=stamp, texts_cache=texts_cache))


def participant_feed_chunks(
    participant: Participant, *, stamp: dt.datetime, texts_cache: FeedCache | None = None
) -> Iterator[bytes]:
    """The participant's feed, in the participant's language, a few hundred events at a time:
    visits' texts from the cache (scheduler.calendars.rendered), milestones written now."""
    language = participant.language
    today = site_today(participant.site)
    with translation.override(language):
        name = _("Study visits")
    yield calendar_head(method="PUBLISH", name=name).encode()
    visits = ScheduledVisit.objects.filter(participant=participant).order_by("target_date", "id")
    for text in visit_texts(
        visits, kind="participant", today=today, language=language, texts_cache=texts_cache
    ):
        yield stamp_text(text, stamp).encode()
    milestones = (
        ScheduledMilestone.objects.filter(participant=participant, rule__participant_facing=True)
        .exclude(status="cancelled")
        .select_related("rule")
        .order_by("rule__code", "sequence")
    )
    texts = []
    with translation.override(language):
        previous: dict[int, object] = {}
        for milestone in milestones:
            event = milestone_event(milestone, previous.get(milestone.rule_id))
            previous[milestone.rule_id] = milestone.dose_mg
            if event is not None:
                texts.append(event_text(event, rsvp=False))
    yield (stamp_text("".join(texts), stamp) + CALENDAR_TAIL).encode()


def site_feed_ical(site: Site, *, trials: Iterable[Any], stamp: dt.datetime) -> bytes:
    return b"".join(site_feed_chunks(site, trials=trials, stamp=stamp))


def site_feed_chunks(
    site: Site,
    *,
    trials: Iterable[Any],
    stamp: dt.datetime,
    texts_cache: FeedCache | None = None,
) -> Iterator[bytes]:
    """The site's feed a few hundred events at a time, for streaming: rows are read in chunks
    (scheduler.calendars.rendered.CHUNK_SIZE), so serving a site of any size holds one chunk
    in memory. Visit names follow the active language (the request's), taken when this is
    called."""
    language = translation.get_language() or "en"
    trial_ids = [getattr(trial, "pk", trial) for trial in trials]
    return _site_feed_chunks(
        site, trial_ids=trial_ids, stamp=stamp, language=language, texts_cache=texts_cache
    )


def _site_feed_chunks(
    site: Site,
    *,
    trial_ids: list[int],
    stamp: dt.datetime,
    language: str,
    texts_cache: FeedCache | None,
) -> Iterator[bytes]:
    with translation.override(language):
        name = _("%(site)s: study visits") % {"site": site.name}
    yield calendar_head(method="PUBLISH", name=name).encode()
    visits = ScheduledVisit.objects.filter(
        participant__site=site, participant__trial_id__in=trial_ids
    ).order_by("target_date", "id")
    today = site_today(site)
    for text in visit_texts(
        visits, kind="site", today=today, language=language, texts_cache=texts_cache
    ):
        yield stamp_text(text, stamp).encode()
    yield CALENDAR_TAIL.encode()


def feed_trial_ids(feed: CalendarFeed) -> list[int]:
    """The trials a site feed shows, by id, in order (read once per feed instance)."""
    known: list[int] | None = feed.__dict__.get("_trial_ids")
    if known is None:
        known = sorted(feed.trials.values_list("pk", flat=True))
        feed.__dict__["_trial_ids"] = known
    return known


@dataclass(frozen=True)
class FeedVersion:
    etag: str
    last_modified: dt.datetime | None


def _counted(history: QuerySet[Any]) -> tuple[int | None, int]:
    """The newest id of these audit rows, and how many there are."""
    marks = history.order_by().aggregate(id=Max("history_id"), rows=Count("history_id"))
    return marks["id"], marks["rows"]


def _site_marks(site_id: int, trial_ids: list[int]) -> tuple[tuple[int | None, int], ...]:
    """The newest id and the number of the audit rows of the site's participants' visits
    and milestones, and of the participants themselves.

    Visits' and milestones' rows participant by participant, through the (participant_id,
    history_id) indexes (migration 0014), in one query. The newest id is one probe a
    participant; the count reads each participant's rows from the index, so it grows with
    the site's history (the price of seeing changes that commit out of order; README).
    Joining the history to the site's participants and aggregating read every heap row
    instead: 107 ms for 1,000 participants with two rows a visit, against 11 ms by probes."""
    marks: dict[str, Any] = {}
    for name, model in (("visit", ScheduledVisit), ("milestone", ScheduledMilestone)):
        rows = model.history.filter(participant_id=OuterRef("pk")).order_by()
        marks[name] = Max(Subquery(rows.order_by("-history_id").values("history_id")[:1]))
        marks[f"{name}_rows"] = Sum(
            Subquery(rows.values("participant_id").annotate(n=Count("*")).values("n"))
        )
    participants = Participant.objects.filter(site_id=site_id, trial_id__in=trial_ids)
    found = participants.order_by().aggregate(**marks)
    return (
        (found["visit"], found["visit_rows"] or 0),
        (found["milestone"], found["milestone_rows"] or 0),
        _counted(Participant.history.filter(site_id=site_id, trial_id__in=trial_ids)),
    )


def feed_version(feed: CalendarFeed, *, texts_cache: FeedCache | None = None) -> FeedVersion:
    """A cheap fingerprint of everything a feed shows (a few aggregate queries, no rendering).

    Every change to a visit, milestone or participant writes a history row, so the newest
    history id and the number of rows in the feed's scope change whenever the feed's content
    can. The number matters: ids are handed out before commit, so a change committed after a
    newer one adds a row below the newest id, which the id alone would not show (a calendar
    app would be told 304 and miss it). History is append-only, so every committed change
    adds to the count. The site's own fields are in the fingerprint, and so is the site's
    date: the status each event states is computed with the site's today.

    Last-Modified is when this server first served this fingerprint (`_first_served`), not
    the newest history row's time: that time is taken before commit too, so a change
    committed late could be older than what a client was already told.
    """
    trial_ids: list[int] = []  # a participant feed's is its participant's
    if feed.participant_id is not None:
        scope = Q(participant_id=feed.participant_id)
        marks: tuple[tuple[int | None, int], ...] = (
            _counted(ScheduledVisit.history.filter(scope)),
            _counted(ScheduledMilestone.history.filter(scope)),
            _counted(Participant.history.filter(id=feed.participant_id)),
        )
    else:
        trial_ids = feed_trial_ids(feed)
        marks = _site_marks(cast(int, feed.site_id), trial_ids)
    site = feed.site or feed.participant.site  # type: ignore[union-attr]
    fingerprint = "|".join(
        str(part)
        for part in (
            feed.pk,
            *marks,
            tuple(trial_ids),
            site.name,
            site.address,
            site.phone,
            site.timezone,
            site.email,
            site_today(site).isoformat(),
            # How events are written (this code, its catalogs, its libraries): a release that
            # writes them differently is a new version of every feed.
            render_mark(),
            # A site feed names visits in the request's language (a participant feed in the
            # participant's, which their history marks).
            translation.get_language() if feed.participant_id is None else "",
        )
    )
    etag = f'"{hashlib.sha256(fingerprint.encode()).hexdigest()[:32]}"'
    # Taken after the reads: a version first served is never stamped earlier than a change
    # its reads saw (a time taken before them could precede it, and a client told that time
    # with the version before would then be answered 304).
    now = timezone.now()
    first = _first_served(feed, etag, now, texts_cache or FeedCache())
    # An HTTP date names a whole second: one is given only once that second is over, so a
    # change later in the same second cannot share it (If-Modified-Since would then say 304).
    whole = first.replace(microsecond=0) + dt.timedelta(seconds=1) <= now
    return FeedVersion(etag=etag, last_modified=first if whole else None)


# How long a fingerprint's first-served time is kept: a feed's fingerprint changes at the
# site's midnight, so one lives a day at most.
FIRST_SERVED_SECONDS = 2 * 24 * 3600


def _first_served(
    feed: CalendarFeed, etag: str, now: dt.datetime, texts_cache: FeedCache
) -> dt.datetime:
    """When this feed was first served with this fingerprint: kept in the cache (shared by
    every web process with Redis). A cache away or a key evicted counts as now, which can
    only make a client fetch a feed it had, never keep one it lacks."""
    # The token's digest, not the id: ids start again in a new database (a test run), and a
    # cache outlives it.
    key = f"feed-first-served:{feed.token_sha256[:32]}:{etag.strip(chr(34))}"
    stamp = texts_cache.first(key, now.timestamp(), timeout=FIRST_SERVED_SECONDS)
    return now if stamp is None else dt.datetime.fromtimestamp(stamp, tz=dt.UTC)
