"""Who may see and do what, and a site's (or a participant's) "now" and "today".

Every face (admin, API, exports, feed pages) gets its querysets here, and everything here
denies by default: a user with no membership sees nothing, a superuser included; a role not
named in a rule below gets nothing from it. Another site's object is simply not in the
queryset, so faces answer 404 for it, never 403.

| role                 | calendars | writes | blinded arm | scope     |
|----------------------|-----------|--------|-------------|-----------|
| coordinator          | read      | yes    | no          | one site  |
| investigator         | read      | yes    | no          | one site  |
| unblinded pharmacist | read      | no     | yes         | one site  |
| sponsor monitor      | read      | no     | no          | all sites |
| data manager         | none      | no     | no          | all sites |
| site system          | read      | yes    | no          | one site  |

A data manager works on protocols only. A trial-wide role acts at every site of its trial.
An investigator or the unblinded pharmacist may still break one participant's code in an
emergency, with their password and a reason, audited (see "Emergency unblinding" below).

Every date a person sees is the site's local date (or, for what a participant receives, the
participant's), never the server's: the server's date is UTC here, which would show a Tokyo
site yesterday's list until 09:00 and turn New York visits overdue at 19:00.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from participants.models import Participant, TreatmentAssignment
from scheduler.models import (
    CalendarFeed,
    CoordinatorNotification,
    EmergencyUnblinding,
    Membership,
    Reminder,
    ScheduledMilestone,
    ScheduledVisit,
    UnblindingNotice,
    WebhookSubscription,
)
from trials.models import ScheduledActivity, Site, Trial, TrialSite

Role = Membership.Role
READ_ROLES = frozenset(
    {
        Role.COORDINATOR,
        Role.INVESTIGATOR,
        Role.UNBLINDED_PHARMACIST,
        Role.SPONSOR_MONITOR,
        Role.SITE_SYSTEM,
    }
)
WRITE_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR, Role.SITE_SYSTEM})
UNBLINDED_ROLES = frozenset({Role.UNBLINDED_PHARMACIST})
PROTOCOL_ROLES = frozenset({Role.DATA_MANAGER})
NOTHING = Q(pk__in=[])


def site_now(site: Site, *, now: dt.datetime | None = None) -> dt.datetime:
    """The current instant on the site's wall clock (an aware datetime in its zone)."""
    return (now or timezone.now()).astimezone(ZoneInfo(site.timezone))


def site_today(site: Site, *, now: dt.datetime | None = None) -> dt.date:
    """The calendar date at the site right now."""
    return site_now(site, now=now).date()


def participant_today(participant: Participant, *, now: dt.datetime | None = None) -> dt.date:
    """The calendar date where the participant lives (their own zone, else their site's)."""
    zone = participant.timezone or participant.site.timezone
    return (now or timezone.now()).astimezone(ZoneInfo(zone)).date()


def zone_today(zone: str, *, now: dt.datetime | None = None) -> dt.date:
    """The calendar date in an IANA zone right now (for lists that span one zone)."""
    return (now or timezone.now()).astimezone(ZoneInfo(zone)).date()


# ----------------------------------------------------------------------------------------
# Scoping


def _memberships(user: object) -> list[Membership]:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:  # type: ignore[attr-defined]
        return []
    cache = getattr(user, "_memberships_cache", None)
    if cache is None:
        # Once per request (the user object lives as long as the request), in id order:
        # not the model's (trial, site, ...) ordering, which joins both tables for an order
        # no rule here depends on.
        rows = Membership.objects.filter(user_id=user.pk).order_by()  # type: ignore[attr-defined]
        cache = sorted(rows, key=lambda membership: membership.pk)
        user._memberships_cache = cache  # type: ignore[attr-defined]
    return cache


def _scope(user: object, roles: frozenset[str], *, prefix: str = "") -> Q:
    """(trial, site) pairs the user may act on in one of `roles`, as a filter; none -> nothing."""
    q = NOTHING
    for membership in _memberships(user):
        if membership.role not in roles:
            continue
        pair = Q(**{f"{prefix}trial_id": membership.trial_id})
        if membership.site_id is not None:
            pair &= Q(**{f"{prefix}site_id": membership.site_id})
        q |= pair
    return q


def participants_for(user: object, *, write: bool = False) -> QuerySet[Participant]:
    """Participants the user may read (or, with write=True, change)."""
    return Participant.objects.filter(_scope(user, WRITE_ROLES if write else READ_ROLES))


def visits_for(user: object, *, write: bool = False) -> QuerySet[ScheduledVisit]:
    roles = WRITE_ROLES if write else READ_ROLES
    return ScheduledVisit.objects.filter(_scope(user, roles, prefix="participant__"))


def milestones_for(user: object, *, write: bool = False) -> QuerySet[ScheduledMilestone]:
    roles = WRITE_ROLES if write else READ_ROLES
    return ScheduledMilestone.objects.filter(_scope(user, roles, prefix="participant__"))


def reminders_for(user: object, *, write: bool = False) -> QuerySet[Reminder]:
    roles = WRITE_ROLES if write else READ_ROLES
    return Reminder.objects.filter(_scope(user, roles, prefix="participant__"))


def notifications_for(user: object) -> QuerySet[CoordinatorNotification]:
    """In-app notices about participants whose calendars the user works on: by trial and
    site, like every record (by site alone, a coordinator of one trial read, and marked read,
    another trial's notices at the same site)."""
    return CoordinatorNotification.objects.filter(
        _scope(user, WRITE_ROLES, prefix="reminder__participant__")
    )


def participant_feeds_for(user: object, *, write: bool = False) -> QuerySet[CalendarFeed]:
    roles = WRITE_ROLES if write else READ_ROLES
    return CalendarFeed.objects.filter(participant__isnull=False).filter(
        _scope(user, roles, prefix="participant__")
    )


def site_feeds_for(user: object, *, write: bool = False) -> QuerySet[CalendarFeed]:
    """Site feeds at sites where the user holds one of the roles for every trial the feed
    shows (another trial's staff's feed is theirs to list, revoke and regenerate)."""
    roles = WRITE_ROLES if write else READ_ROLES
    held = NOTHING  # (trial, site) pairs, as a filter on the feed's trials
    for membership in _memberships(user):
        if membership.role in roles:
            pair = Q(trial_id=membership.trial_id)
            if membership.site_id is not None:
                pair &= Q(calendarfeed__site_id=membership.site_id)
            held |= pair
    feed_trials = CalendarFeed.trials.through.objects.filter(calendarfeed_id=OuterRef("pk"))
    outside = feed_trials.exclude(held)
    return CalendarFeed.objects.filter(site__in=sites_for(user, roles=roles)).exclude(
        Exists(outside)
    )


def feed_trials_at(user: object, site: Site) -> QuerySet[Trial]:
    """The trials a site feed issued by `user` at `site` shows: those whose calendars the
    user changes there."""
    pairs = NOTHING
    for membership in _memberships(user):
        if membership.role in WRITE_ROLES and membership.site_id in (site.pk, None):
            pairs |= Q(pk=membership.trial_id)
    return Trial.objects.filter(pairs, trialsite__site=site).distinct()


def sites_for(user: object, *, roles: frozenset[str] = READ_ROLES) -> QuerySet[Site]:
    """Sites where the user holds one of `roles` (a trial-wide role: every site of its trial)."""
    q = NOTHING
    for membership in _memberships(user):
        if membership.role not in roles:
            continue
        if membership.site_id is not None:
            q |= Q(pk=membership.site_id)
        else:
            q |= Q(trialsite__trial_id=membership.trial_id)
    return Site.objects.filter(pk__in=Site.objects.filter(q).values("pk"))


def trials_for(
    user: object, *, roles: frozenset[str] = READ_ROLES | PROTOCOL_ROLES
) -> QuerySet[Trial]:
    ids = {m.trial_id for m in _memberships(user) if m.role in roles}
    return Trial.objects.filter(pk__in=ids)


def can_see_arm(user: object, *, trial: Trial, site: Site | None = None) -> bool:
    """May the user see treatment arms of this trial (at this site)?

    In an open trial anyone who may read its participants may; in a blinded trial only an
    unblinded role, and only at its own site.
    """
    roles = READ_ROLES if not trial.is_blinded else UNBLINDED_ROLES
    return any(
        m.role in roles
        and m.trial_id == trial.pk
        and (m.site_id is None or site is None or m.site_id == site.pk)
        for m in _memberships(user)
    )


# Trial governance: Django's permission to change trials (the sponsor's trial administrators).
GOVERN_TRIALS = "trials.change_trial"


def can_change_blinding(user: object, *, trial: Trial) -> bool:
    """Who may change a trial's blinding (and must give a reason): an unblinded role of the
    trial who also governs trials (GOVERN_TRIALS). The blinding is the whole trial's, at every
    site: an unblinded pharmacist, whose role is one site's, may not open it for everyone
    alone."""
    return bool(user.has_perm(GOVERN_TRIALS)) and any(  # type: ignore[attr-defined]
        m.role in UNBLINDED_ROLES and m.trial_id == trial.pk for m in _memberships(user)
    )


def assignments_for(user: object) -> QuerySet[TreatmentAssignment]:
    """Treatment assignments the user may read: open trials they read, blinded trials only as
    an unblinded role at the participant's site."""
    open_trials = _scope(user, READ_ROLES, prefix="participant__") & Q(
        participant__trial__blinding="open"
    )
    unblinded = _scope(user, UNBLINDED_ROLES, prefix="participant__")
    return TreatmentAssignment.objects.filter(open_trials | unblinded)


# ----------------------------------------------------------------------------------------
# Per-(trial, site) questions for faces that create rows or choose what to show of one row
# (the REST API's register and its participant representation).

CONTACT_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR})


def _holds(user: object, roles: frozenset[str], *, trial_id: int, site_id: int) -> bool:
    return any(
        m.role in roles and m.trial_id == trial_id and m.site_id in (None, site_id)
        for m in _memberships(user)
    )


def can_write_at(user: object, *, trial: Trial, site: Site) -> bool:
    """May the user create participants of this trial at this site (a write role there)?"""
    return _holds(user, WRITE_ROLES, trial_id=trial.pk, site_id=site.pk)


def can_read_at(user: object, *, trial: Trial, site: Site) -> bool:
    """Does the user read calendars of this trial at this site (any read role there)?"""
    return _holds(user, READ_ROLES, trial_id=trial.pk, site_id=site.pk)


def can_confirm_eligibility(user: object, *, trial_id: int, site_id: int) -> bool:
    """The screening log's sign-off is the site's investigator's: the person responsible
    for the trial at the site, not the coordinator who prepares it."""
    return _holds(user, frozenset({Role.INVESTIGATOR}), trial_id=trial_id, site_id=site_id)


def can_see_contact_details(user: object, *, trial_id: int, site_id: int) -> bool:
    """Participants' email, phone and guardian: only the site's coordinators and
    investigators, who contact them. Site systems, pharmacists and monitors never need them."""
    return _holds(user, CONTACT_ROLES, trial_id=trial_id, site_id=site_id)


def reminders_with_contact_details_for(user: object) -> QuerySet[Reminder]:
    """Reminders whose delivery error the user may read: a provider's or a mail server's text
    can name the address or the number (scrubbed before it is stored, but only the roles that
    see contact details read it at all), so the rule is `can_see_contact_details`'."""
    return Reminder.objects.filter(_scope(user, CONTACT_ROLES, prefix="participant__"))


def sees_contact_details_wherever_it_reads(user: object) -> bool:
    """Is every (trial, site) pair the user reads one where it also sees contact details?
    (Then sorting a list by a delivery error tells it nothing it could not read anyway.)"""
    reading = [m for m in _memberships(user) if m.role in READ_ROLES]
    return bool(reading) and all(m.role in CONTACT_ROLES for m in reading)


# ----------------------------------------------------------------------------------------
# For the admin: whether to show a door at all, and where a new participant may be registered.


def holds_role(user: object, roles: frozenset[str]) -> bool:
    """Does the user hold any of `roles` anywhere (the admin shows a model's door only then)?"""
    return any(m.role in roles for m in _memberships(user))


def trial_sites_for(user: object, *, roles: frozenset[str] = WRITE_ROLES) -> QuerySet[TrialSite]:
    """The (trial, site) pairs the user acts on in one of `roles`, as TrialSite rows."""
    return TrialSite.objects.filter(_scope(user, roles))


def scheduled_activities_for(user: object) -> QuerySet[ScheduledActivity]:
    """The schedule of activities (which procedure at which visit) of the protocols the user
    reads: those of the trials it is a member of, in any role that reads calendars or
    protocols. Protocol content names no site and no participant."""
    return ScheduledActivity.objects.filter(visit__version__trial__in=trials_for(user))


# ----------------------------------------------------------------------------------------
# Users, groups, memberships and machine credentials: governance, not clinical data. Only
# user managers (Django's `auth.change_user`) see them, every row (a user manager grants the
# memberships that scope everyone else, so it must see them all); nobody else sees any.

MANAGE_USERS = "auth.change_user"
M = TypeVar("M", bound=models.Model)


def manages_users(user: object) -> bool:
    """Does the user manage users (and so memberships, machine credentials, groups)?"""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:  # type: ignore[attr-defined]
        return False
    return bool(user.has_perm(MANAGE_USERS))  # type: ignore[attr-defined]


def user_management_rows_for(user: object, rows: QuerySet[M]) -> QuerySet[M]:
    """`rows` of a user-management model (users, groups, memberships, OAuth applications,
    tokens, grants) as the user may see them: all of them for a user manager, none for
    anyone else."""
    return rows if manages_users(user) else rows.none()


# ----------------------------------------------------------------------------------------
# Webhooks: a site system subscribes to the events of the (trial, site) pairs it acts for.

WEBHOOK_ROLES = frozenset({Role.SITE_SYSTEM})


def can_receive_events_at(user: object, *, trial_id: int, site_id: int) -> bool:
    """May the user subscribe to (and keep receiving) calendar events of this trial at this
    site? Only as a site system there; asked again before every delivery, so a membership
    revoked after the event was planned sends nothing."""
    return _holds(user, WEBHOOK_ROLES, trial_id=trial_id, site_id=site_id)


def is_site_system(user: object) -> bool:
    """Does the user act as a site system anywhere (of any trial, at any site)?"""
    return any(m.role in WEBHOOK_ROLES for m in _memberships(user))


def webhook_subscriptions_for(user: object) -> QuerySet[WebhookSubscription]:
    """A site system's own subscriptions: another system's (or anyone's, for a user that is
    no site system) are not there, so the API answers 404 for them."""
    if not any(m.role in WEBHOOK_ROLES for m in _memberships(user)):
        return WebhookSubscription.objects.none()
    return WebhookSubscription.objects.filter(owner=user)  # type: ignore[misc]


# ----------------------------------------------------------------------------------------
# Emergency unblinding: breaking the code of one participant of a blinded trial.
#
# The site's investigator is the person who breaks the code in an emergency (the treating
# physician must know what the participant received); the site's unblinded pharmacist, who
# holds the codes, may do it for them. Never coordinators, monitors or site systems: they stay
# blinded. The audit entries (who, whom, why; never the arm) are read by the trial's monitors
# and its unblinded roles; the notices go to the trial's unblinded pharmacists.

EMERGENCY_UNBLIND_ROLES = frozenset({Role.INVESTIGATOR, Role.UNBLINDED_PHARMACIST})
UNBLINDING_AUDIT_ROLES = UNBLINDED_ROLES | {Role.SPONSOR_MONITOR}


def can_emergency_unblind(user: object, *, trial_id: int, site_id: int) -> bool:
    """May the user break the code of a participant of this trial at this site?"""
    return _holds(user, EMERGENCY_UNBLIND_ROLES, trial_id=trial_id, site_id=site_id)


def emergency_unblindings_for(user: object) -> QuerySet[EmergencyUnblinding]:
    """Audit entries of emergency unblindings: a monitor's whole trial, a pharmacist's site."""
    return EmergencyUnblinding.objects.filter(
        _scope(user, UNBLINDING_AUDIT_ROLES, prefix="participant__")
    )


def unblinded_contacts(trial: Trial) -> QuerySet[Any]:
    """The people told of an emergency unblinding in the trial: its active unblinded
    pharmacists, at every site (each once)."""
    return (
        get_user_model()
        .objects.filter(
            is_active=True, memberships__trial=trial, memberships__role__in=UNBLINDED_ROLES
        )
        .distinct()
        .order_by("pk")
    )


def unblinding_notices_for(user: object) -> QuerySet[UnblindingNotice]:
    """The user's own notices, while they still hold an unblinded role in the trial."""
    if not _memberships(user):
        return UnblindingNotice.objects.none()
    return UnblindingNotice.objects.filter(
        recipient=user,  # type: ignore[misc]
        unblinding__participant__trial__in=trials_for(user, roles=UNBLINDED_ROLES),
    )
