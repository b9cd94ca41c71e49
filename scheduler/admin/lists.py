"""Lists that fit the work: the visit list's filters, its compact columns and its CSV export.

Every date filter counts each visit against its own site's today (`per_site_today`): a list can
span Tokyo and New York. The start page's counts link here with exactly these meanings
(scheduler/workspace.py):
- window: open today; closing within N days (`closing_N`, still open); closed; closed within
  the last N days (`closed_N`);
- booked: for today; later this week (the next 6 days); this week (today and the next 6);
- deviation: out of window; done out of window with no reason recorded;
- procedure, resource: visits with a procedure of that code, or needing that resource.

The export (`visit_export_view`) is the list itself as CSV: the same changelist (scope,
filters, search, ordering), streamed row by row, dates site-local, no contact details, and
the arm only where the user may see it (never for a blinded role in a blinded trial).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from functools import partial
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, F, Model, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, TruncDate
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils import translation
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from participants.models import Participant
from scheduler import access, audittrail
from scheduler.display import site_time
from scheduler.models import ScheduledProcedure, ScheduledVisit
from scheduler.selectors import (
    VISIT_GLANCE_LABELS,
    rows_share_related,
    rows_streamed,
    visit_glance_status,
    visits_attach_procedures,
)
from scheduler.workspace import deviation_awaiting_reason, per_site_today, week_end
from trials.models import ProcedureDefinition, Site

ZONE = "participant__site__timezone"
# Days a `closing_N` / `closed_N` filter may name (a year either way).
MAX_DAYS = 366


def _on_each_site(build: Any) -> Q:
    return per_site_today(build, zone_field=ZONE)


class WindowFilter(admin.SimpleListFilter):
    title = gettext_lazy("window")
    parameter_name = "window"
    PATTERN = re.compile(r"^(open|closed)$|^(closing|closed)_(\d{1,3})$")

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("open", _("open today")),
            ("closing_3", _("closing within 3 days")),
            ("closing_7", _("closing within 7 days")),
            ("closed", _("closed")),
            ("closed_14", _("closed in the last 14 days")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        match = self.PATTERN.match(value)
        days = int(match.group(3)) if match and match.group(3) else 0
        if match is None or days > MAX_DAYS:
            raise IncorrectLookupParameters(
                _("Unknown window filter %(value)r.") % {"value": value}
            )
        kind = match.group(1) or match.group(2)

        def build(today: dt.date) -> Q:
            is_open = Q(window_start__lte=today, window_end__gte=today)
            if kind == "open":
                return is_open
            if kind == "closing":
                return is_open & Q(window_end__lte=today + dt.timedelta(days=days))
            closed = Q(window_end__lt=today)
            if match.group(3):
                return closed & Q(window_end__gte=today - dt.timedelta(days=days))
            return closed

        return queryset.filter(_on_each_site(build))


class BookedFilter(admin.SimpleListFilter):
    title = gettext_lazy("booked for")
    parameter_name = "booked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("today", _("today")),
            ("later", _("later this week (the next 6 days)")),
            ("week", _("this week (today and the next 6 days)")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        ranges = {
            "today": lambda today: Q(booked_date=today),
            "later": lambda today: Q(booked_date__gt=today, booked_date__lte=week_end(today)),
            "week": lambda today: Q(booked_date__gte=today, booked_date__lte=week_end(today)),
        }
        if value is None:
            return queryset
        if value not in ranges:
            raise IncorrectLookupParameters(
                _("Unknown booked filter %(value)r.") % {"value": value}
            )
        return queryset.filter(_on_each_site(ranges[value]))


class DeviationFilter(admin.SimpleListFilter):
    title = gettext_lazy("deviation")
    parameter_name = "deviation"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("any", _("out of window")),
            ("no_reason", _("done out of window, awaiting a reason")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "any":
            return queryset.filter(deviation_days__isnull=False).exclude(deviation_days=0)
        if self.value() == "no_reason":
            return queryset.filter(deviation_awaiting_reason())
        return queryset


def _protocol_procedures(request: HttpRequest) -> QuerySet[ProcedureDefinition]:
    """Procedures of the protocols of the trials the user reads (their codes and names)."""
    return ProcedureDefinition.objects.filter(version__trial__in=access.trials_for(request.user))


def _with_procedure(queryset: QuerySet[Any], **lookups: str) -> QuerySet[Any]:
    scheduled = ScheduledProcedure.objects.filter(
        visit=OuterRef("pk"), **{f"procedure__{key}": value for key, value in lookups.items()}
    )
    return queryset.filter(Exists(scheduled))


class ProcedureFilter(admin.SimpleListFilter):
    title = gettext_lazy("procedure")
    parameter_name = "procedure"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names: dict[str, str] = {}
        for code, name in (
            _protocol_procedures(request).order_by("code", "-id").values_list("code", "name")
        ):
            names.setdefault(code, name)
        return [(code, f"{code} – {name}") for code, name in names.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        code = self.value()
        return queryset if code is None else _with_procedure(queryset, code=code)


class ResourceFilter(admin.SimpleListFilter):
    title = gettext_lazy("resource")
    parameter_name = "resource"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        resources = (
            _protocol_procedures(request)
            .exclude(resource="")
            .order_by("resource")
            .values_list("resource", flat=True)
            .distinct()
        )
        return [(resource, resource) for resource in resources]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        resource = self.value()
        return queryset if resource is None else _with_procedure(queryset, resource=resource)


class ExportLink(admin.ListFilter):
    """Not a filter: the "download these rows as CSV" link, at the top of the filters, with
    the list's own query string (so the export is exactly the list)."""

    title = gettext_lazy("export")
    template = "admin/workspace/export_link.html"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        opts = model._meta
        self.url = reverse(f"admin:{opts.app_label}_{opts.model_name}_export")

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Iterator[Any]:
        yield {
            "display": _("Download these %(count)s rows as CSV")
            % {"count": changelist.result_count},
            "query_string": f"{self.url}{changelist.get_query_string()}",
            "selected": False,
        }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset

    def expected_parameters(self) -> list[str | None]:
        return []


# ----------------------------------------------------------------------------------------
# Compact columns (what matters visible at 1366 px)


def _where(trial: Any, site: Site) -> str:
    # A study id is unique in its trial only: the trial's and the site's codes, small.
    return format_html('<small class="quiet">{}<br>{}</small>', trial.code, site.code)


@admin.display(description=gettext_lazy("study id"), ordering="participant__study_id")
def visit_study_id_column(visit: ScheduledVisit) -> str:
    return visit.participant.study_id


@admin.display(description=gettext_lazy("trial · site"), ordering="participant__trial__code")
def visit_where_column(visit: ScheduledVisit) -> str:
    return _where(visit.participant.trial, visit.participant.site)


@admin.display(description=gettext_lazy("trial · site"), ordering="trial__code")
def participant_where_column(participant: Any) -> str:
    return _where(participant.trial, participant.site)


@admin.display(description=gettext_lazy("visit"), ordering="visit_definition__code")
def visit_column(visit: ScheduledVisit) -> str:
    return visit.code


@admin.display(description=gettext_lazy("target (window)"), ordering="target_date")
def target_window_column(visit: ScheduledVisit) -> str:
    return format_html(
        '{}<br><small class="quiet">{}&nbsp;→&nbsp;{}</small>',
        visit.target_date.isoformat(),
        f"{visit.window_start:%m-%d}",
        f"{visit.window_end:%m-%d}",
    )


@admin.display(description=gettext_lazy("± days"), ordering="deviation_days")
def deviation_column(visit: ScheduledVisit) -> str:
    """Days outside the window of the booking or the visit (blank inside it)."""
    days = visit.deviation_days
    return "" if not days else f"{days:+d}"


@admin.display(
    description=gettext_lazy("enrolled"),
    # The day shown: the enrollment's day, else (enrolled before it was kept) the day it was
    # recorded.
    ordering=Coalesce(F("enrolled_on"), TruncDate("enrolled_at")),
)
def enrolled_column(participant: Any) -> str:
    """The day of enrollment at the site (the instant it was recorded is on the participant's
    page); for participants enrolled before that day was stored, the site-local day it was
    recorded."""
    if participant.enrolled_on is not None:
        return participant.enrolled_on.isoformat()  # type: ignore[no-any-return]
    if participant.enrolled_at is None:
        return "—"
    return (
        participant.enrolled_at.astimezone(ZoneInfo(participant.site.timezone)).date().isoformat()
    )


# ----------------------------------------------------------------------------------------
# CSV export

DANGEROUS_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not read as a formula (numbers stay numbers)."""
    text = "" if value is None else str(value)
    if text.startswith(DANGEROUS_START) and not re.fullmatch(r"-?\d+", text):
        return "'" + text
    return text


def _date(day: dt.date | None) -> str:
    return day.isoformat() if day is not None else ""


class _Echo:
    def write(self, value: str) -> str:
        return value


# Visits the export reads at a time, with their procedures.
EXPORT_CHUNK = 500
# What the export reads of a visit's participant.
EXPORTED_PARTICIPANT_FIELDS = frozenset({"id", "trial", "site", "study_id"})


def visit_csv_rows(visits: QuerySet[ScheduledVisit], *, user: Any) -> Iterator[str]:
    """The CSV lines of `visits` (already scoped and filtered), a generator: rows are read from
    the database in chunks as the response is sent, never all at once."""
    shows_arm = _shows_arm(user)
    if shows_arm:
        # The arm comes from access.assignments_for: empty for a blinded role's rows.
        visits = visits.annotate(
            arm_code=Subquery(
                access.assignments_for(user)
                .filter(participant=OuterRef("participant"))
                .values("arm__code")[:1]
            )
        )
    # The participant joined, only what a line shows of it (its study id, site and trial; never
    # a contact detail); its site and trial and the visit's definition, a few rows shared by
    # thousands, read once each (`rows_share_related`), not built again for every row (the
    # list's own joins, which the changelist's rows arrive with, dropped).
    visits = (
        visits.select_related(None)
        .select_related("participant")
        .defer(
            *(
                f"participant__{field.name}"
                for field in Participant._meta.concrete_fields
                if field.name not in EXPORTED_PARTICIPANT_FIELDS
            )
        )
    )
    writer = csv.writer(_Echo())
    # The file is read by the sites' own tools (a spreadsheet macro, a CTMS import): its
    # header, status words, visit names and booked times are the same English whatever the
    # language of who exports it.
    header = [
        "trial",
        "site",
        "study id",
        "visit",
        "visit name",
        "status",
        "target date",
        "window start",
        "window end",
        "booked at (site-local)",
        "booked date",
        "done on",
        "deviation days",
        "procedures",
        "resources",
        "site time zone",
    ]
    if shows_arm:
        header.append("arm")
    # A byte order mark first: Excel reads a CSV file without one in the computer's legacy
    # code page (Shift JIS in Japan, Windows-1252 in Europe), so a resource named "PET/CT室"
    # or a site's "Zürich" came out garbled. Python reads it with "utf-8-sig", pandas and
    # LibreOffice on their own.
    yield "\ufeff" + writer.writerow(header)
    todays: dict[int, dt.date] = {}
    rows = rows_streamed(visits, chunk_size=EXPORT_CHUNK)
    # Sites, trials and visit definitions: read once each, whichever chunk first needs them.
    sites: dict[Any, Model] = {}
    trials: dict[Any, Model] = {}
    definitions: dict[Any, Model] = {}
    # A chunk's procedures as plain rows, not a prefetch: prefetched procedures point back at
    # their visit, a reference cycle that only the garbage collector's rare full pass frees,
    # so every row exported stayed in memory until then (21 MiB at the peak for 6,000 rows,
    # where a chunk at a time peaks at 5 MiB).
    while chunk := visits_attach_procedures(list(islice(rows, EXPORT_CHUNK))):
        participants = [visit.participant for visit in chunk]
        sites = rows_share_related(participants, "site", known=sites.values())
        trials = rows_share_related(participants, "trial", known=trials.values())
        definitions = rows_share_related(chunk, "visit_definition", known=definitions.values())
        for visit in chunk:
            site: Site = visit.participant.site
            if site.pk not in todays:
                todays[site.pk] = access.site_today(site)
            procedures = [scheduled.procedure for scheduled in visit.procedures_in_order]
            resources = dict.fromkeys(p.resource for p in procedures if p.resource)
            with translation.override("en"):  # the file's words, names and times: see header
                name = visit.name
                booked = site_time(visit.booked_start, site) if visit.booked_start else ""
            row = [
                visit.participant.trial.code,
                site.code,
                visit.participant.study_id,
                visit.code,
                name,
                VISIT_GLANCE_LABELS[visit_glance_status(visit, today=todays[site.pk])],
                _date(visit.target_date),
                _date(visit.window_start),
                _date(visit.window_end),
                booked,
                _date(visit.booked_date),
                _date(visit.actual_date),
                "" if visit.deviation_days is None else visit.deviation_days,
                " ".join(p.code for p in procedures),
                "; ".join(resources),
                site.timezone,
            ]
            if shows_arm:
                row.append(getattr(visit, "arm_code", None) or "")
            yield writer.writerow([_cell(value) for value in row])


def _shows_arm(user: Any) -> bool:
    """Does the export carry an arm column: the user may see the arm in some trial they read
    (an open trial, or a blinded one as an unblinded role)? A blinded role in blinded trials
    only gets no arm column at all."""
    trials = access.trials_for(user, roles=access.READ_ROLES)
    return any(access.can_see_arm(user, trial=trial) for trial in trials)


def visit_export_view(model_admin: Any, request: HttpRequest) -> HttpResponseBase:
    """The visit list as it is filtered now, as a streamed CSV file."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        changelist = model_admin.get_changelist_instance(request)
    except IncorrectLookupParameters as bad:
        model_admin.message_user(
            request,
            _("The list could not be exported: %(why)s") % {"why": bad or _("unknown filter")},
            messages.ERROR,
        )
        return HttpResponseRedirect(reverse("admin:scheduler_scheduledvisit_changelist"))
    audittrail.record_export(request, export="visits", rows=changelist.result_count)
    response = StreamingHttpResponse(
        visit_csv_rows(changelist.queryset, user=request.user),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = 'attachment; filename="visits.csv"'
    return response


def export_urlpattern(model_admin: Any) -> URLPattern:
    """The export's URL, `admin:<app>_<model>_export`, for the admin's `get_urls`."""
    opts = model_admin.model._meta
    return path(
        "export.csv",
        model_admin.admin_site.admin_view(partial(visit_export_view, model_admin)),
        name=f"{opts.app_label}_{opts.model_name}_export",
    )
