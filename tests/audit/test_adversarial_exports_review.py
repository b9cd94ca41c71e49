"""Adversarial review of what coordinators, monitors, pharmacists and investigators export and
read of the audit trail: the visit list's streamed CSV export, the audit-trail lists
(historical visits and milestones), the security audit, and the record views
(`scheduler/audittrail.py`: `record_view`, `record_views`, `record_export`).

Tests marked xfail(strict=True) reproduce a defect found in the review; the others pin down
behaviour checked and found correct that no other test covered. The worlds:
tests/workspace/conftest.py (`ws`: New York and Tokyo, NIAMS double-blind with arms) and
tests/audit/conftest.py (`world`: Berlin and Tokyo, a coordinator and an auditor).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from participants.models import TreatmentAssignment
from scheduler.models import Reminder, SecurityEvent
from scheduler.services import visit_book
from tests.audit.conftest import World as AuditWorld
from tests.conftest import sign_in
from tests.factories import SiteFactory, member
from tests.workspace.conftest import NOW as WS_NOW
from tests.workspace.conftest import World, at, build_world, niams_participant, staff, visit

pytestmark = pytest.mark.django_db
D = dt.date
VISITS = reverse("admin:scheduler_scheduledvisit_changelist")
EXPORT = reverse("admin:scheduler_scheduledvisit_export")
AUDIT = reverse("admin:scheduler_securityevent_changelist")
VISIT_HISTORY = reverse("admin:scheduler_historicalscheduledvisit_changelist")
MILESTONE_HISTORY = reverse("admin:scheduler_historicalscheduledmilestone_changelist")


@pytest.fixture
def ws(import_seed: Any, django_user_model: Any) -> World:
    builder = django_user_model.objects.create_user("builder", password="unused-builder")
    return build_world(import_seed, builder)


@pytest.fixture
def coordinator(ws: World) -> Client:
    """A NIAMS coordinator at New York; a 500 is a status to assert, not a crash."""
    client = sign_in(Client(), staff("coordinator-ny", trial=ws.niams.trial, site=ws.ny))
    client.raise_request_exception = False
    return client


def rows_of(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    raw = b"".join(response.streaming_content)
    assert raw.startswith(codecs.BOM_UTF8)  # for Excel: see visit_csv_rows
    text = raw.decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))


def views() -> list[tuple[str, int | None, str, str]]:
    rows = SecurityEvent.objects.filter(kind="view").order_by("id")
    return [(e.username, e.participant_id, e.surface, e.detail.get("page", "")) for e in rows]


def exports() -> list[dict[str, Any]]:
    rows = SecurityEvent.objects.filter(kind="export").order_by("id")
    return list(rows.values_list("detail", flat=True))


# ----------------------------------------------------------------------------------------
# Malformed input: a 400 or a refused filter, never a 500.


def test_an_admin_quoted_participant_id_shows_the_page_and_records_its_view(
    world: AuditWorld,
) -> None:
    client = sign_in(Client(), world.coordinator)
    client.raise_request_exception = False
    pk = world.participant.pk
    # Django's admin unquotes "_0A" to a newline, and int("1\n") is 1: participant 1's page.
    response = client.get(f"/admin/participants/participant/{pk}_0A/change/")

    assert response.status_code == 200
    assert views() == [("coordinator", pk, "admin", "change")]


# Django lets any lookup on one of the model's own fields through the query string (only a
# lookup across a relation must be a list filter). A value the database refuses, or a year
# Python cannot hold, is then raised while the list is counted, outside Django's own
# "incorrect lookup" handling: a 500 on the list, its CSV export and the audit-trail lists.
MALFORMED_LOOKUPS = [
    (VISITS, "reason__regex=("),
    (EXPORT, "reason__regex=("),
    (EXPORT, "target_date__year=99999"),
    (VISITS, "target_date__year=99999"),
    (VISIT_HISTORY, "history_change_reason__regex=("),
    (VISIT_HISTORY, "target_date__year=99999"),
    (MILESTONE_HISTORY, "history_change_reason__regex=(%5B"),
    (VISIT_HISTORY, "changed_on=yesterday"),
    (MILESTONE_HISTORY, "changed_on=today&changed_on=1"),
]


@pytest.mark.parametrize(("url", "query"), MALFORMED_LOOKUPS)
def test_a_malformed_lookup_on_a_list_its_export_or_its_audit_trail_is_refused(
    ws: World, coordinator: Client, url: str, query: str
) -> None:
    with time_machine.travel(WS_NOW, tick=False):
        response = coordinator.get(f"{url}?{query}")

    assert response.status_code in (302, 400)
    assert exports() == []


@pytest.mark.parametrize("query", ["ip_address=not-an-ip", "username__regex=("])
def test_a_malformed_lookup_in_the_security_audit_is_refused(world: AuditWorld, query: str) -> None:
    auditor = sign_in(Client(), world.auditor)
    auditor.raise_request_exception = False

    response = auditor.get(f"{AUDIT}?{query}")

    assert (response.status_code, response.get("Location")) == (302, f"{AUDIT}?e=1")


# Django's date hierarchy adds a year (or a day) to the one asked for, outside its own
# ValueError handling: year 9999 is a 500 wherever a list has a date hierarchy.
@pytest.mark.parametrize(
    ("url", "query", "who"),
    [
        (VISIT_HISTORY, "history_date__year=9999", "coordinator"),
        (MILESTONE_HISTORY, "history_date__year=9999&history_date__month=12", "coordinator"),
        (
            VISIT_HISTORY,
            "history_date__year=9999&history_date__month=12&history_date__day=31",
            "coordinator",
        ),
        (AUDIT, "at__year=9999", "auditor"),
        (AUDIT, "at__year=9999&at__month=12&at__day=31", "auditor"),
    ],
)
def test_a_date_drilldown_to_the_last_year_of_the_calendar_is_refused(
    world: AuditWorld, url: str, query: str, who: str
) -> None:
    client = sign_in(Client(), getattr(world, who))
    client.raise_request_exception = False

    response = client.get(f"{url}?{query}")

    assert (response.status_code, response.get("Location")) == (302, f"{url}?e=1")


# ----------------------------------------------------------------------------------------
# Time: the audit trail's dates are the site's.


def test_the_history_lists_day_drilldown_is_the_day_each_row_shows(
    ws: World, django_user_model: Any
) -> None:
    builder = django_user_model.objects.get(username="builder")
    with at(D(2026, 1, 4)):
        kiri = SiteFactory.create(code="kiri", name="Kiritimati", timezone="Pacific/Kiritimati")
        k1 = niams_participant(ws.niams, kiri, "K-001", D(2026, 3, 31), "ANI")
    # 10:30 UTC on 10 March is already 00:30 on 11 March at Kiritimati (UTC+14).
    with time_machine.travel(dt.datetime(2026, 3, 10, 10, 30, tzinfo=dt.UTC), tick=False):
        visit_book(
            visit=visit(k1, "V1"),
            local_date=D(2026, 3, 12),
            local_time=dt.time(9),
            by=builder,
            reason="moved to the 12th",
        )
    client = sign_in(Client(), staff("kiri-coordinator", trial=ws.niams.trial, site=kiri))
    mine = "history_change_reason=moved+to+the+12th"

    def shown(query: str) -> list[str]:
        response = client.get(f"{VISIT_HISTORY}?{mine}&{query}")
        changelist = response.context["cl"]
        return [changelist.model_admin.changed_at(e) for e in changelist.result_list]

    with time_machine.travel(dt.datetime(2026, 3, 10, 10, 45, tzinfo=dt.UTC), tick=False):
        everything = shown("")
        on_the_11th = shown("history_date__year=2026&history_date__month=3&history_date__day=11")
        on_the_10th = shown("history_date__year=2026&history_date__month=3&history_date__day=10")

    assert everything == ["Wed 11 Mar 2026 00:30 +14"]
    assert (on_the_11th, on_the_10th) == (["Wed 11 Mar 2026 00:30 +14"], [])


# Now: 08:30 on 11 March in Tokyo (UTC+9), 19:30 on 10 March in New York (EDT since the
# 8th, UTC-4). Each probe is an audit entry at an instant (UTC) a minute-pair either side of a
# local midnight that bounds one of the quick filter's spans, at each site.
QUICK_NOW = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.UTC)
PROBES = {
    # Tokyo
    "t-today": dt.datetime(2026, 3, 10, 15, 30),  # 00:30 on the 11th
    "t-yesterday": dt.datetime(2026, 3, 10, 14, 30),  # 23:30 on the 10th (UTC's today)
    "t-7-days": dt.datetime(2026, 3, 3, 15, 30),  # 00:30 on the 4th
    "t-8-days": dt.datetime(2026, 3, 3, 14, 30),  # 23:30 on the 3rd
    "t-1-march": dt.datetime(2026, 2, 28, 15, 30),  # 00:30 on 1 March
    "t-28-feb": dt.datetime(2026, 2, 28, 14, 30),  # 23:30 on 28 February
    "t-1-jan": dt.datetime(2025, 12, 31, 15, 30),  # 00:30 on 1 January 2026
    "t-31-dec": dt.datetime(2025, 12, 31, 14, 30),  # 23:30 on 31 December 2025
    # New York
    "n-today": dt.datetime(2026, 3, 10, 4, 30),  # 00:30 on the 10th (EDT)
    "n-yesterday": dt.datetime(2026, 3, 10, 3, 30),  # 23:30 on the 9th (UTC's today)
    "n-7-days": dt.datetime(2026, 3, 3, 5, 30),  # 00:30 on the 3rd (EST)
    "n-8-days": dt.datetime(2026, 3, 3, 4, 30),  # 23:30 on the 2nd
    "n-1-march": dt.datetime(2026, 3, 1, 5, 30),  # 00:30 on 1 March
    "n-28-feb": dt.datetime(2026, 3, 1, 4, 30),  # 23:30 on 28 February (UTC's March)
    "n-1-jan": dt.datetime(2026, 1, 1, 5, 30),  # 00:30 on 1 January 2026
    "n-31-dec": dt.datetime(2026, 1, 1, 4, 30),  # 23:30 on 31 December 2025 (UTC's 2026)
}
TODAY = {"t-today", "n-today"}
PAST_7_DAYS = TODAY | {"t-yesterday", "t-7-days", "n-yesterday", "n-7-days"}
THIS_MONTH = PAST_7_DAYS | {"t-8-days", "t-1-march", "n-8-days", "n-1-march"}
THIS_YEAR = THIS_MONTH | {"t-28-feb", "t-1-jan", "n-28-feb", "n-1-jan"}


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ("", set(PROBES)),
        ("today", TODAY),
        ("past_7_days", PAST_7_DAYS),
        ("this_month", THIS_MONTH),
        ("this_year", THIS_YEAR),
    ],
)
def test_the_history_lists_quick_date_filter_counts_each_sites_days(
    ws: World, span: str, expected: set[str]
) -> None:
    # The audit trail is append-only: each probe is a change saved at its instant.
    tokyo, new_york = ws.v(ws.t1, "INF"), ws.v(ws.p2, "V1")
    for name, instant in PROBES.items():
        changed = tokyo if name.startswith("t-") else new_york
        changed._change_reason = f"probe {name}"  # type: ignore[attr-defined]
        with time_machine.travel(instant.replace(tzinfo=dt.UTC), tick=False):
            changed.save()
    user = staff("both-sites", trial=ws.niams.trial, site=ws.ny)
    member(user, trial=ws.tsukuba_version.trial, site=ws.tokyo)
    client = sign_in(Client(), user)

    with time_machine.travel(QUICK_NOW, tick=False):
        response = client.get(
            f"{VISIT_HISTORY}?q=probe&changed_on={span}" if span else f"{VISIT_HISTORY}?q=probe"
        )

    assert response.status_code == 200
    shown = response.context["cl"].result_list
    assert {e.history_change_reason.removeprefix("probe ") for e in shown} == expected
    choices = [
        c["display"] for c in response.context["cl"].filter_specs[1].choices(response.context["cl"])
    ]
    assert choices == ["All", "Today", "Past 7 days", "This month", "This year"]


def test_export_instants_at_half_hour_zones_and_on_a_fall_back_night_match_the_visit_page(
    ws: World, django_user_model: Any
) -> None:
    """Kathmandu (+05:45) and St John's (-03:30, whose clocks go back at 02:00 NDT on Sunday
    1 November 2026): the export's site-local instant is the one the visit's page shows,
    01:30 on the fall-back night being its first run (NDT)."""
    builder = django_user_model.objects.get(username="builder")
    sites = {
        "ktm": SiteFactory.create(code="ktm", name="Kathmandu", timezone="Asia/Kathmandu"),
        "yyt": SiteFactory.create(code="yyt", name="St John's", timezone="America/St_Johns"),
    }
    booked = {}
    with time_machine.travel(dt.datetime(2026, 9, 1, 12, tzinfo=dt.UTC), tick=False):
        for code, site in sites.items():
            participant = niams_participant(ws.niams, site, f"{code}-1", D(2026, 11, 22), "ANI")
            booked[code] = visit(participant, "V1").pk
            visit_book(
                visit=visit(participant, "V1"),
                local_date=D(2026, 11, 1),
                local_time=dt.time(1, 30),
                by=builder,
            )
    user = staff("far-coordinator", trial=ws.niams.trial, site=sites["ktm"])
    member(user, trial=ws.niams.trial, site=sites["yyt"])
    client = sign_in(Client(), user)
    with time_machine.travel(dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC), tick=False):
        rows = rows_of(client.get(f"{EXPORT}?status__exact=booked"))
        pages = {
            code: client.get(
                reverse("admin:scheduler_scheduledvisit_change", args=[pk])
            ).content.decode()
            for code, pk in booked.items()
        }

    assert sorted((r[1], r[9], r[10]) for r in rows[1:]) == [
        ("ktm", "Sun 1 Nov 2026 01:30 +0545", "2026-11-01"),
        ("yyt", "Sun 1 Nov 2026 01:30 NDT", "2026-11-01"),
    ]
    assert "Sun 1 Nov 2026 01:30 +0545" in pages["ktm"]
    assert "Sun 1 Nov 2026 01:30 NDT" in pages["yyt"]


def test_a_japanese_readers_export_is_the_same_file_as_an_english_readers(ws: World) -> None:
    client = sign_in(
        Client(), staff("tokyo-coordinator", trial=ws.tsukuba_version.trial, site=ws.tokyo)
    )
    with time_machine.travel(WS_NOW, tick=False):
        english = rows_of(client.get(EXPORT, HTTP_ACCEPT_LANGUAGE="en"))
        japanese = rows_of(client.get(EXPORT, HTTP_ACCEPT_LANGUAGE="ja"))

    first = english[1]
    assert (first[2], first[3], first[4], first[9]) == (
        "T-001",
        "INF#1",
        "Anifrolumab infusion visit",
        "Wed 11 Mar 2026 10:00 JST",
    )
    # README: the CSV export is still English whoever exports it, for site IT's tools.
    assert japanese == english


# ----------------------------------------------------------------------------------------
# The access audit: every page of a participant's record leaves a view; refusals none.


@pytest.mark.parametrize("page", ["visit", "assignment"])
def test_the_page_of_a_participants_visit_or_arm_records_a_view(ws: World, page: str) -> None:
    pharmacist = staff("pharmacist", trial=ws.niams.trial, site=ws.ny, role="unblinded_pharmacist")
    client = sign_in(Client(), pharmacist)
    url = (
        reverse("admin:scheduler_scheduledvisit_change", args=[ws.v(ws.p1, "V1").pk])
        if page == "visit"
        else reverse(
            "admin:participants_treatmentassignment_change",
            args=[TreatmentAssignment.objects.get(participant=ws.p1).pk],
        )
    )
    with time_machine.travel(WS_NOW, tick=False):
        response = client.get(url)

    assert response.status_code == 200
    assert [(user, pk, surface) for user, pk, surface, _ in views()] == [
        ("pharmacist", ws.p1.pk, "admin")
    ]


def test_refused_exports_record_nothing_and_another_sites_participant_exports_no_row(
    ws: World, coordinator: Client, django_user_model: Any
) -> None:
    # A user with no clinical role (an auditor, say) is refused; a bad filter is a message;
    # another site's participant asked for by id is no row, and the file says so.
    outsider = django_user_model.objects.create_user(
        "outsider", password="a-long-passphrase", is_staff=True
    )
    with time_machine.travel(WS_NOW, tick=False):
        refused = sign_in(Client(), outsider).get(EXPORT)
        bad = coordinator.get(f"{EXPORT}?window=closing_9999")
        assert exports() == []
        other = rows_of(coordinator.get(f"{EXPORT}?participant__id__exact={ws.t1.pk}"))

    assert (refused.status_code, bad.status_code, bad["Location"]) == (403, 302, VISITS)
    assert len(other) == 1  # the header alone
    assert exports() == [
        {"export": "visits", "filter": f"participant__id__exact={ws.t1.pk}", "rows": 0}
    ]
    assert views() == []


def test_a_monitor_cannot_read_a_hidden_delivery_error_through_a_query_parameter(
    ws: World,
) -> None:
    # The search box leaves the error out for a monitor (ReminderAdmin.get_search_results);
    # the same question as a lookup in the query string must not answer it either.
    Reminder.objects.filter(pk=ws.dead_email.pk).update(
        last_error="550 5.1.1 mailbox full: the lupus clinic's patient list"
    )
    monitor = sign_in(
        Client(), staff("monitor", trial=ws.niams.trial, site=None, role="sponsor_monitor")
    )
    reminders = reverse("admin:scheduler_reminder_changelist")

    def answer(query: str) -> int:
        response = monitor.get(f"{reminders}?{query}")
        return response.context["cl"].result_count if response.status_code == 200 else -1

    with time_machine.travel(WS_NOW, tick=False):
        searched = answer("q=lupus")
        looked_up = answer("last_error__icontains=lupus")
        nonsense = answer("last_error__icontains=zzz-nowhere")

    assert searched == 0
    assert looked_up == nonsense
