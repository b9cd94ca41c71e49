"""A participant's timeline: every visit and milestone on one time axis, the taper as a
dose-over-time chart, and each open visit's lifecycle actions next to it.

`participant_timeline` reads what the page needs in a fixed number of queries, whatever the
length of the calendar (a read that belongs in scheduler/selectors.py; it stays here until that
file's owner moves it). `scheduler/timeline.py` draws it; `TimelineMixin` adds the page
(`<id>/timeline/`, URL name `admin:participants_participant_timeline`) and its link to the
participant admin, whose queryset scopes it: another site's participant is a 404.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from participants.models import Participant
from scheduler import access, audittrail
from scheduler.access import site_today
from scheduler.admin.base import CalendarActionsAdmin
from scheduler.admin.screening import participant_status_text
from scheduler.admin.sitebookings import picker_week, slot_picker, week_of
from scheduler.engine.taper import dose_ceiling
from scheduler.engine.types import TaperSpec
from scheduler.models import ScheduledMilestone, ScheduledVisit, TaperAdjustment
from scheduler.selectors import (
    TAPER_STEP_LABELS,
    VISIT_GLANCE_LABELS,
    milestone_step_status,
    milestones_with_next_step,
    visit_glance_status,
)
from scheduler.timeline import (
    TaperChart,
    TaperWeek,
    Timeline,
    TimelineMilestone,
    TimelineRow,
    TimelineVisit,
    mg,
    render_taper,
    render_timeline,
)
from trials.models import MilestoneRule, localized_name, taper_drug
from trials.protocol_file import EARLIEST_DATE, LATEST_DATE, MilestoneKind, Taper

# The status words the selectors name, for the translation catalogue (they are looked up by
# key and translated where they are shown).
STATUS_WORDS = (
    gettext_noop("upcoming"),
    gettext_noop("due"),
    gettext_noop("booked"),
    gettext_noop("overdue"),
    gettext_noop("done"),
    gettext_noop("out of window"),
    gettext_noop("missed"),
    gettext_noop("cancelled"),
    gettext_noop("past"),
    gettext_noop("current"),
    gettext_noop("planned"),
)
# The legend, in the order a visit lives through them.
LEGEND_ORDER = (
    "upcoming",
    "due",
    "booked",
    "done",
    "out_of_window",
    "overdue",
    "missed",
    "cancelled",
)


def _visit_word(key: str) -> str:
    return _(str(VISIT_GLANCE_LABELS[key]))


def _step_word(key: str) -> str:
    return _(str(TAPER_STEP_LABELS.get(key, key)))


# ----------------------------------------------------------------------------------------
# The read


@dataclass(frozen=True)
class VisitEntry:
    visit: ScheduledVisit
    status: str
    status_text: str
    anchor: str


@dataclass(frozen=True)
class MilestoneEntry:
    milestone: ScheduledMilestone
    status: str
    status_text: str
    anchor: str
    held: bool = False


@dataclass(frozen=True)
class TaperSection:
    rule: MilestoneRule
    chart: TaperChart
    entries: list[MilestoneEntry]


@dataclass(frozen=True)
class ParticipantTimeline:
    today: dt.date
    timeline: Timeline
    visits: list[VisitEntry]
    milestones: list[MilestoneEntry]
    tapers: list[TaperSection] = field(default_factory=list)


def participant_timeline(participant: Participant, *, today: dt.date) -> ParticipantTimeline:
    """Everything the timeline shows, in three queries (two without a taper): the visits
    with their definitions and epochs, the milestones with their rules (and each taper week's
    next week, for the current dose), and the taper decisions. `today` is the site's."""
    visits = list(
        ScheduledVisit.objects.filter(participant=participant)
        .select_related("visit_definition__epoch")
        .order_by("target_date", "id")
    )
    milestones = list(
        milestones_with_next_step(ScheduledMilestone.objects.filter(participant=participant))
        .select_related("rule")
        .order_by("due_date", "id")
    )
    has_taper = any(m.rule.kind == MilestoneKind.TAPER for m in milestones)
    holds = (
        set(
            TaperAdjustment.objects.filter(
                participant=participant, kind=TaperAdjustment.Kind.HOLD
            ).values_list("milestone_code", "week")
        )
        if has_taper
        else set()
    )

    rows: dict[str, TimelineRow] = {}
    epoch_order: dict[str, tuple[int, dt.date]] = {}
    visit_entries: list[VisitEntry] = []
    timeline_visits: list[TimelineVisit] = []
    for visit in visits:
        definition = visit.visit_definition
        if definition is None:
            key, group = "unscheduled", _("Unscheduled visits")
            label, order = _("Unscheduled visits"), (10**6, visit.target_date)
        else:
            key, group = f"visit-{definition.pk}", localized_name(definition.epoch)
            label = f"{definition.code} – {localized_name(definition)}"
            order = (definition.epoch.order, visit.target_date)
        if key not in rows:
            rows[key] = TimelineRow(key=key, label=label, group=group, title=label)
            epoch_order[key] = order
        status = visit_glance_status(visit, today=today)
        entry = VisitEntry(visit, status, _visit_word(status), f"visit-{visit.pk}")
        visit_entries.append(entry)
        on, on_text = None, ""
        if visit.actual_date is not None:
            on, on_text = visit.actual_date, _("done on")
        elif visit.booked_date is not None and visit.status == ScheduledVisit.Status.BOOKED:
            on, on_text = visit.booked_date, _("booked for")
        timeline_visits.append(
            TimelineVisit(
                row=key,
                code=visit.code,
                name=visit.name,
                target=visit.target_date,
                window_start=visit.window_start,
                window_end=visit.window_end,
                status=status,
                status_text=entry.status_text,
                anchor=entry.anchor,
                on=on,
                on_text=on_text,
            )
        )
    # Rows by epoch (the protocol's order), then by each row's first date.
    ordered_rows = sorted(rows.values(), key=lambda row: epoch_order[row.key])

    milestone_entries: list[MilestoneEntry] = []
    timeline_milestones: list[TimelineMilestone] = []
    milestone_rows: dict[str, TimelineRow] = {}
    by_rule: dict[int, list[MilestoneEntry]] = {}
    for milestone in milestones:
        rule = milestone.rule
        key = f"milestone-{rule.pk}"
        if key not in milestone_rows:
            label = f"{rule.code} – {localized_name(rule)}"
            milestone_rows[key] = TimelineRow(key, label, _("Milestones"), label)
        if milestone.dose_mg is not None:
            status = milestone_step_status(milestone, today=today)
            text = _step_word(status)
            code = _("%(code)s week %(week)s: %(dose)s mg/day") % {
                "code": rule.code,
                "week": milestone.sequence,
                "dose": mg(milestone.dose_mg),
            }
        else:
            status = str(milestone.status)
            text = _step_word(status)
            code = rule.code
        step = MilestoneEntry(
            milestone,
            status,
            text,
            f"milestone-{milestone.pk}",
            held=(rule.code, milestone.sequence) in holds,
        )
        milestone_entries.append(step)
        by_rule.setdefault(rule.pk, []).append(step)
        timeline_milestones.append(
            TimelineMilestone(
                key, code, localized_name(rule), milestone.due_date, status, text, step.anchor
            )
        )

    timeline = Timeline(
        title=_("Timeline of %(participant)s") % {"participant": participant},
        today=today,
        rows=(*ordered_rows, *milestone_rows.values()),
        visits=tuple(timeline_visits),
        milestones=tuple(timeline_milestones),
        legend=tuple((key, _visit_word(key)) for key in LEGEND_ORDER),
    )
    tapers = [
        TaperSection(entries[0].milestone.rule, _taper_chart(participant, entries), entries)
        for entries in by_rule.values()
        if entries[0].milestone.rule.kind == MilestoneKind.TAPER and entries[0].milestone.rule.taper
    ]
    return ParticipantTimeline(today, timeline, visit_entries, milestone_entries, tapers)


def _taper_chart(participant: Participant, entries: list[MilestoneEntry]) -> TaperChart:
    rule = entries[0].milestone.rule
    taper = Taper.model_validate(rule.taper)
    cap, cap_text = None, ""
    if participant.weight_kg is not None:
        spec = TaperSpec(
            initial_mg_per_kg=taper.initial_mg_per_kg,
            initial_weeks=taper.initial_weeks,
            target_mg=taper.target_mg,
            target_week=taper.target_week,
            step_mg=taper.step_mg,
            initial_max_mg=taper.initial_max_mg,
        )
        weight = Decimal(participant.weight_kg)
        cap = dose_ceiling(spec, weight)
        by_weight = taper.initial_mg_per_kg * weight
        cap_text = (
            _("%(per_kg)s mg/kg × %(weight)s kg")
            % {"per_kg": mg(taper.initial_mg_per_kg), "weight": mg(weight)}
            if cap == by_weight
            else _("the protocol's ceiling")
        )
    weeks = tuple(
        TaperWeek(
            week=entry.milestone.sequence,
            due=entry.milestone.due_date,
            dose_mg=entry.milestone.dose_mg,
            status=entry.status,
            status_text=entry.status_text,
            held=entry.held,
            flag=entry.milestone.flag,
        )
        for entry in sorted(entries, key=lambda e: e.milestone.sequence)
        if entry.milestone.dose_mg is not None and entry.status != "cancelled"
    )
    return TaperChart(
        code=rule.code,
        title=(
            _("%(name)s, dose per week") % {"name": localized_name(rule)}
            if taper.drug.lower() in rule.name.lower()
            else _("%(name)s (%(drug)s), dose per week")
            % {"name": localized_name(rule), "drug": taper_drug(rule)}
        ),
        weeks=weeks,
        target_mg=taper.target_mg,
        target_week=taper.target_week,
        cap_mg=cap,
        cap_text=cap_text,
        unit=_("mg/day"),
    )


# ----------------------------------------------------------------------------------------
# The page

VISIT_BUTTONS = (
    ("book", gettext_noop("Book / reschedule")),
    ("record_done", gettext_noop("Record done")),
    ("mark_missed", gettext_noop("Mark missed")),
    ("cancel", gettext_noop("Cancel visit")),
)
PARTICIPANT_BUTTONS = (
    ("withdraw", gettext_noop("Withdraw")),
    ("anchor", gettext_noop("Change anchor date")),
    ("unscheduled_visit", gettext_noop("Add unscheduled visit")),
)
ACTIVE = (Participant.Status.SCREENING, Participant.Status.ENROLLED)


class TimelineMixin(CalendarActionsAdmin):
    """The participant admin's timeline page and the link to it on the participant's page."""

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        return [
            path(
                "<int:object_id>/timeline/",
                self.admin_site.admin_view(self.timeline_view),
                name=f"{opts.app_label}_{opts.model_name}_timeline",
            ),
            *super().get_urls(),
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None:
            context["related_links"] = [
                (_("Timeline"), self.action_url("timeline", obj)),
                *context.get("related_links", []),
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def timeline_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        participant: Participant = self.visible_object(
            request,
            object_id,
            self.get_queryset(request).select_related("trial", "site", "protocol_version"),
        )
        audittrail.record_view(
            request, participant_id=participant.pk, surface="admin", page="timeline"
        )
        today = site_today(participant.site)
        read = participant_timeline(participant, today=today)
        may_act = participant.status in ACTIVE and self.may_write(request, participant)
        arm = None
        if access.can_see_arm(request.user, trial=participant.trial, site=participant.site):
            assignment = (
                access.assignments_for(request.user)
                .filter(participant=participant)
                .select_related("arm")
                .first()
            )
            arm = assignment.arm.name if assignment is not None else None

        pickable = [e.visit for e in read.visits if may_act and _pickable(e.visit, today)]
        visit_rows = [
            {
                "entry": entry,
                "view_url": reverse("admin:scheduler_scheduledvisit_change", args=[entry.visit.pk]),
                "actions": [
                    (
                        _(label),
                        reverse(f"admin:scheduler_scheduledvisit_{name}", args=[entry.visit.pk]),
                    )
                    for name, label in VISIT_BUTTONS
                ]
                if may_act and entry.visit.is_open
                else [],
            }
            for entry in read.visits
        ]
        taper_url = self.action_url("taper", participant) if may_act else None
        tapers = [
            {
                "section": section,
                # render_taper escapes every outside text (scheduler/timeline.py).
                "svg": mark_safe(render_taper(section.chart)),  # nosec B308 B703  # noqa: S308
                "rows": [
                    {
                        "entry": entry,
                        "dose": mg(entry.milestone.dose_mg)
                        if entry.milestone.dose_mg is not None
                        else "—",
                        "decide_url": (
                            f"{taper_url}?milestone_code={section.rule.code}"
                            f"&week={entry.milestone.sequence}"
                        )
                        if taper_url
                        and entry.milestone.sequence > 0
                        and entry.status in ("current", "planned")
                        else None,
                    }
                    for entry in sorted(section.entries, key=lambda e: e.milestone.sequence)
                ],
            }
            for section in read.tapers
        ]
        taper_codes = {section.rule.pk for section in read.tapers}
        other_milestones = [e for e in read.milestones if e.milestone.rule_id not in taper_codes]
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            # The chart needs the width: no sidebar on this page.
            "is_nav_sidebar_enabled": False,
            "opts": opts,
            "title": _("Timeline of %(participant)s") % {"participant": participant},
            "original": participant,
            "original_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[participant.pk]
            ),
            "participant": participant,
            "today": today,
            "arm": arm,
            "summary": [
                (_("Participant"), str(participant)),
                (_("Status"), participant_status_text(participant)),
                (_("Protocol version"), str(participant.protocol_version)),
                (
                    _("Site"),
                    _("%(site)s; dates are site-local (%(zone)s), today there is %(today)s")
                    % {
                        "site": participant.site.name,
                        "zone": participant.site.timezone,
                        "today": today.isoformat(),
                    },
                ),
            ],
            # render_timeline escapes every outside text (scheduler/timeline.py).
            "timeline_svg": mark_safe(render_timeline(read.timeline)),  # nosec B308 B703  # noqa: S308
            "visit_rows": visit_rows,
            "tapers": tapers,
            "milestones": other_milestones,
            "participant_actions": self._participant_buttons(request, participant)
            if may_act
            else [],
            **_picker_context(request, participant, pickable),
        }
        return TemplateResponse(request, "admin/timeline/timeline.html", context)

    def _participant_buttons(
        self, request: HttpRequest, participant: Participant
    ) -> list[tuple[str, str]]:
        """The participant's own actions (the taper's are on its weeks): those the admin
        offers on the participant's page when it lists them, else withdraw, anchor change and
        unscheduled visit."""
        offered = getattr(self, "lifecycle_buttons", None)
        if offered is not None:
            taper_url = self.action_url("taper", participant)
            return [
                (label, url) for label, url in offered(request, participant) if url != taper_url
            ]
        return [
            (_(label), self.action_url(name, participant)) for name, label in PARTICIPANT_BUTTONS
        ]


# ----------------------------------------------------------------------------------------
# The slot picker under the timeline (scheduler/admin/sitebookings.py)


# The picker offers the visits due now and those whose window opens within this many days
# (a one-day window, NIAMS week 0, is booked ahead), not the whole calendar.
PICK_AHEAD_DAYS = 7


def _pickable(visit: ScheduledVisit, today: dt.date) -> bool:
    """Planned, nothing booked, its window open at the site or opening within a week."""
    return (
        visit.status == ScheduledVisit.Status.PLANNED
        and visit.window_end >= today
        and visit.window_start <= today + dt.timedelta(days=PICK_AHEAD_DAYS)
    )


def _picker_context(
    request: HttpRequest, participant: Participant, pickable: list[ScheduledVisit]
) -> dict[str, Any]:
    """A link per unbooked visit whose window is open, and the week picker of the one asked
    for (`?pick=<visit id>&week=<a day>`): the picker reads the site's calendar, so the
    timeline reads it only when asked. Each free start posts to the booking with it filled
    in, so its preview is the next page and "Confirm" books it."""
    here = reverse("admin:participants_participant_timeline", args=[participant.pk])
    asked = request.GET.get("pick", "")
    visit = next((v for v in pickable if str(v.pk) == asked), None)
    choices = {
        "picker_choices": [
            (v.code, f"{here}?{urlencode({'pick': v.pk})}#slot-picker", v == visit)
            for v in pickable
        ]
    }
    if visit is None:
        return choices
    visit.participant = participant  # read already, with its site
    try:
        week = dt.date.fromisoformat(request.GET["week"]) if request.GET.get("week") else None
    except ValueError:
        week = None
    if week is not None and not EARLIEST_DATE <= week <= LATEST_DATE:
        # Off the dates anything is planned on (its week would run off the calendar's ends):
        # the picker's own week, as for a week that is not a date.
        week = None
    today = site_today(participant.site)
    monday = picker_week(visit, today, week)
    picker = slot_picker(visit, user=request.user, week=monday, now=timezone.now())
    # The week's lanes name other participants with their visit times: reads of their records
    # (this participant's own read is the timeline's).
    first, last = week_of(monday)
    audittrail.record_views(
        request,
        participant_ids=picker.named - {participant.pk},
        surface="admin",
        page="slot picker",
        site=participant.site.code,
        first=first.isoformat(),
        last=last.isoformat(),
    )

    def week_url(day: dt.date | None) -> str | None:
        if day is None:
            return None
        return f"{here}?{urlencode({'pick': visit.pk, 'week': day.isoformat()})}#slot-picker"

    book = reverse("admin:scheduler_scheduledvisit_book", args=[visit.pk])
    return {
        **choices,
        "picker": picker,
        "board": picker.board,
        "picker_previous_url": week_url(picker.previous_week),
        "picker_next_url": week_url(picker.next_week),
        "slot_post": f"{book}?{urlencode({'next': here})}",
        "slot_version": visit.version,
    }
