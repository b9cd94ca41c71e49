from __future__ import annotations

import datetime as dt

from django.db.models import Count, Q, QuerySet

from participants.models import Participant
from scheduler.engine import ProtocolSnapshot
from scheduler.models import ScheduledMilestone, ScheduledVisit
from scheduler.snapshot import snapshot_from_document
from trials.models import ProtocolVersion, Site
from trials.services import protocol_document

VISIT_STATUS_KEYS = ("due", "booked", "done", "missed", "out_of_window", "overdue")

# What a person is shown for one visit, computed from its record and the site's today, never
# stored (a stored "planned" goes stale the day the window closes).
VISIT_GLANCE_LABELS = {
    "upcoming": "upcoming",
    "due": "due",
    "booked": "booked",
    "overdue": "overdue",
    "done": "done",
    "out_of_window": "out of window",
    "missed": "missed",
    "cancelled": "cancelled",
}


def protocol_snapshot(*, version: ProtocolVersion) -> ProtocolSnapshot:
    """The engine's view of a stored protocol version (a fixed number of queries)."""
    return snapshot_from_document(protocol_document(version=version))


def visit_status_filters(*, today: dt.date, prefix: str = "") -> dict[str, Q]:
    """What each status-at-a-glance count means, as filters on scheduled visits.

    due: planned, and its window is open today; booked: booked for today or later;
    done, missed: as recorded; out_of_window: done or booked outside its window (a protocol
    deviation); overdue: its window closed (planned) or its booked day passed (booked) with
    nothing recorded.
    """

    def q(**lookups: object) -> Q:
        return Q(**{f"{prefix}{field}": value for field, value in lookups.items()})

    return {
        "due": q(status="planned", window_start__lte=today, window_end__gte=today),
        "booked": q(status="booked", booked_date__gte=today),
        "done": q(status="done"),
        "missed": q(status="missed"),
        "out_of_window": q(status__in=["done", "booked"], deviation_days__isnull=False)
        & ~q(deviation_days=0),
        "overdue": q(status="planned", window_end__lt=today)
        | q(status="booked", booked_date__lt=today),
    }


def visit_glance_status(visit: ScheduledVisit, *, today: dt.date) -> str:
    """One visit's status at a glance, a key of VISIT_GLANCE_LABELS; `today` is the site's.

    Agrees with `visit_status_filters` (a visit counted under a key there gets that key here),
    choosing one key where the counts overlap: overdue before out of window for a booking whose
    day passed unrecorded; out of window before done for a deviation.
    """
    status = visit.status
    if status in ("cancelled", "missed"):
        return status
    off_window = visit.deviation_days not in (None, 0)
    if status == "done":
        return "out_of_window" if off_window else "done"
    if status == "booked":
        if visit.booked_date is not None and visit.booked_date < today:
            return "overdue"
        return "out_of_window" if off_window else "booked"
    if visit.window_end < today:
        return "overdue"
    return "due" if visit.window_start <= today else "upcoming"


def participants_with_visit_status(
    *, queryset: QuerySet[Participant], today: dt.date
) -> QuerySet[Participant]:
    """Participants annotated with visits_due, visits_booked, … visits_overdue (one query)."""
    filters = visit_status_filters(today=today, prefix="visits__")
    return queryset.annotate(
        **{f"visits_{key}": Count("visits", filter=filters[key]) for key in VISIT_STATUS_KEYS}
    )


def sites_with_visit_status(*, queryset: QuerySet[Site], today: dt.date) -> QuerySet[Site]:
    """Sites annotated with the same counts over all their participants' visits."""
    filters = visit_status_filters(today=today, prefix="participants__visits__")
    return queryset.annotate(
        **{
            f"visits_{key}": Count("participants__visits", filter=filters[key])
            for key in VISIT_STATUS_KEYS
        }
    )


def withdrawal_cancellations(
    *, participant: Participant, on: dt.date
) -> tuple[list[ScheduledVisit], list[ScheduledMilestone]]:
    """What withdrawing on `on` cancels: open visits dated (booked, else target) on or after
    it, and planned milestones due on or after it. The withdrawal service and its confirmation
    page both use this, so the page lists exactly what will happen."""
    visits = [
        visit
        for visit in ScheduledVisit.objects.filter(
            participant=participant, status__in=ScheduledVisit.OPEN
        )
        .select_related("visit_definition")
        .order_by("target_date", "id")
        if (visit.booked_date or visit.target_date) >= on
    ]
    milestones = list(
        ScheduledMilestone.objects.filter(
            participant=participant, status=ScheduledMilestone.Status.PLANNED, due_date__gte=on
        )
        .select_related("rule")
        .order_by("due_date", "id")
    )
    return visits, milestones
