from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import factory

from participants.models import Participant
from participants.services import participant_register
from trials.models import ProtocolVersion, Site, TrialSite


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ["code"]

    code = factory.Sequence(lambda n: f"site-{n}")
    name = factory.Sequence(lambda n: f"Site {n}")
    timezone = "America/New_York"
    country = "US"
    address = "10 Center Drive, Bethesda, MD 20892"
    phone = "+1 301-496-2563"


def participant_for(
    version: ProtocolVersion,
    *,
    anchors: dict[str, dt.date],
    birth_date: dt.date = dt.date(1980, 6, 15),
    weight_kg: Decimal | None = Decimal(60),
    site: Site | None = None,
    study_id: str | None = None,
    **fields: Any,
) -> Participant:
    """A participant in screening on `version`, at a site that runs its trial."""
    at_site: Site = site or SiteFactory.create()
    TrialSite.objects.get_or_create(trial=version.trial, site=at_site)
    return participant_register(
        trial=version.trial,
        site=at_site,
        study_id=study_id or f"P-{Participant.objects.count() + 1:03d}",
        birth_date=birth_date,
        anchors=anchors,
        weight_kg=weight_kg,
        protocol_version=version,
        **fields,
    )


# ----------------------------------------------------------------------------------------
# Memberships: the admin and the API show clinical data only through them (scheduler/access.py).


def member(user: Any, *, trial: Any, site: Site | None = None, role: str = "coordinator") -> Any:
    """Give `user` a role in `trial` at `site` (None: trial-wide roles); returns the user."""
    from scheduler.models import Membership

    Membership.objects.get_or_create(user=user, trial=trial, site=site, role=role)
    return user


def governs_trials(user: Any) -> Any:
    """Give `user` Django's permission to change trials (access.GOVERN_TRIALS); returns a
    fresh copy of the user (Django caches permissions on the object)."""
    from django.contrib.auth.models import Permission

    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="trials", codename="change_trial")
    )
    return type(user).objects.get(pk=user.pk)


@contextmanager
def member_of_every_trial_site(user: Any, *, role: str = "coordinator") -> Iterator[Any]:
    """`user` holds `role` at every (trial, site) pair, those created inside the block too.

    For tests of a face whose subject is not scoping (a booking page, a feed page): their user
    works where their participants are, as a real coordinator would."""
    from django.db.models.signals import post_save

    def grant(sender: Any, instance: TrialSite, created: bool, **kwargs: Any) -> None:
        if created:
            member(user, trial=instance.trial, site=instance.site, role=role)

    member_everywhere(user, role=role)
    post_save.connect(grant, sender=TrialSite, weak=False, dispatch_uid=f"member-{user.pk}")
    try:
        yield user
    finally:
        post_save.disconnect(sender=TrialSite, dispatch_uid=f"member-{user.pk}")


def member_everywhere(user: Any, *, role: str = "coordinator") -> Any:
    """`user` holds `role` at every (trial, site) pair there is now; returns the user."""
    for trial_site in TrialSite.objects.select_related("trial", "site"):
        member(user, trial=trial_site.trial, site=trial_site.site, role=role)
    return user


def site_trials(site: Any) -> Any:
    """Every trial at `site`: what a site feed shows when its issuer works on all of them."""
    from trials.models import Trial

    return Trial.objects.filter(trialsite__site=site)


def site_feed_create(*, site: Any, by: Any = None) -> Any:
    """A site feed showing every trial at the site (feed_create's `trials`)."""
    from scheduler.calendars.feeds import feed_create

    return feed_create(site=site, trials=site_trials(site), by=by)


def booked_ahead(visits: Any, *, days: int = 30) -> None:
    """Book `visits` `days` from now (the clock as it reads now, frozen or real).

    A reminder of a visit that is not booked, or has begun, is not sent
    (scheduler.outbox.channels), so tests that write reminder rows by hand for a visit book
    it first. Written directly: only the outbox is under test there."""
    from django.utils import timezone

    from scheduler.models import ScheduledVisit

    start = timezone.now() + dt.timedelta(days=days)
    ScheduledVisit.objects.filter(pk__in=[visit.pk for visit in visits]).update(
        status="booked", booked_start=start, booked_date=start.date()
    )
