"""The coordinator's start page: scoped by access.py, each site on its own today, every row
linking to its one action and every count to the list of exactly its rows, in a fixed number
of queries (the world: tests/workspace/conftest.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from scheduler.display import site_time
from scheduler.models import Reminder
from scheduler.services import visit_book
from scheduler.workspace import workspace_for
from tests.conftest import sign_in
from tests.factories import member
from tests.workspace.conftest import NOW, World, at, niams_participant, staff, visit

D = dt.date
pytestmark = pytest.mark.django_db


def rows(block: dict[str, Any]) -> dict[str, list[tuple[str, ...]]]:
    """Each section's rows as (participant, what, when, procedures, resources, status,
    action label, action URL), sections without rows left out."""
    return {
        section.key: [
            (
                row.who.label,
                row.what,
                row.when,
                row.procedures,
                row.resources,
                row.status,
                row.action.label,
                row.action.url,
            )
            for row in section.rows
        ]
        for section in block["sections"]
        if section.rows
    }


def counts(block: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    return {
        section.key: [(count.label, count.number) for count in section.counts]
        for section in block["sections"]
    }


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=args)


def start_page(client: Any, user: Any) -> Any:
    sign_in(client, user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return response


NY_EXAMS = (
    "Physical exam, Blood and urine tests, Heart function test (ECG), Chest X-ray, "
    "Questionnaire about lupus symptoms"
)


def test_a_coordinator_sees_their_sites_work_with_one_action_per_row(
    world: World, coordinator: Any, now: None, client: Any
) -> None:
    response = start_page(client, coordinator)

    assert [t.name for t in response.templates][0] == "admin/workspace/start.html"
    (block,) = response.context["site_blocks"]
    assert (block["site"], block["today"], block["clock"]) == (
        world.ny,
        D(2026, 3, 10),
        "Tue 10 Mar 2026 12:00 EDT",
    )
    v = world.v
    assert rows(block) == {
        "today": [
            (
                "P-003",
                "V1 – Screening",
                "Tue 10 Mar 2026 14:00 EDT",
                NY_EXAMS,
                "X-ray room",
                "booked",
                "Record done",
                url("scheduler_scheduledvisit_record_done", v(world.p3, "V1").pk),
            )
        ],
        "week": [
            (
                "P-004",
                "V1 – Screening",
                "Fri 13 Mar 2026 09:30 EDT",
                NY_EXAMS,
                "X-ray room",
                "booked",
                "Reschedule",
                url("scheduler_scheduledvisit_book", v(world.p4, "V1").pk),
            )
        ],
        "due": [
            (
                "P-001",
                "V3C – Safety phone call after treatment visit 2",
                "window 2026-03-07 to 2026-03-11: closes in 1 day",
                "—",
                "—",
                "due",
                "Book",
                url("scheduler_scheduledvisit_book", v(world.p1, "V3C").pk),
            )
        ],
        "overdue": [
            (
                "P-002",
                "V1 – Screening",
                "booked for Mon 9 Mar 2026 10:00 EDT",
                NY_EXAMS,
                "X-ray room",
                "overdue",
                "Record done",
                url("scheduler_scheduledvisit_record_done", v(world.p2, "V1").pk),
            )
        ],
        "missed": [
            (
                "P-001",
                "V3 – Treatment visit 2 (week 4)",
                "window 2026-02-27 to 2026-03-05",
                "Physical exam, Blood and urine tests, Study drug infusion (IV)",
                "Infusion chair",
                "missed",
                "Open calendar",
                url("participants_participant_change", world.p1.pk),
            )
        ],
        "deviation": [
            (
                "P-001",
                "V1 – Screening",
                "done 2026-01-25, 6 days after the window",
                NY_EXAMS,
                "X-ray room",
                "out of window",
                "Give the reason",
                url("scheduler_scheduledvisit_deviation_reason", v(world.p1, "V1").pk),
            )
        ],
        "outbox": [
            (
                "P-002",
                f"{world.failed_webhook.event} · webhook deliveries",
                rows_when(world.failed_webhook),
                "—",
                "—",
                "failed (will retry) after 2 attempts",
                "Retry",
                url("scheduler_reminder_changelist"),
            ),
            (
                "P-001",
                f"{world.dead_email.event} · email",
                rows_when(world.dead_email),
                "—",
                "—",
                "dead (gave up) after 5 attempts",
                "Retry",
                url("scheduler_reminder_changelist"),
            ),
        ],
    }
    assert counts(block) == {
        "today": [("all", 1)],
        "week": [("all", 1)],
        "due": [("all", 1), ("closing within 3 days", 1)],
        "overdue": [("all", 1)],
        "missed": [("all", 1)],
        "deviation": [("all", 1)],
        "taper": [("all", 0)],
        "outbox": [("email", 1), ("webhook deliveries", 1)],
    }
    trials = {row.trial for section in block["sections"] for row in section.rows}
    assert trials == {"niams-ani-vascular"}
    html = response.content.decode()
    # Another site's participant, visits and reminders are nowhere on the page.
    assert "T-001" not in html
    assert "Tsukuba" not in html


def rows_when(reminder: Reminder) -> str:
    return site_time(reminder.due_at, reminder.participant.site)


def test_every_count_lands_on_the_list_of_exactly_its_rows(
    world: World, coordinator: Any, now: None, client: Any
) -> None:
    (block,) = start_page(client, coordinator).context["site_blocks"]
    landed = {}
    for section in block["sections"]:
        for count in section.counts:
            listed = client.get(count.url)
            assert listed.status_code == 200, count.url
            landed[(section.key, str(count.label))] = sorted(
                obj.pk for obj in listed.context["cl"].result_list
            )
            assert listed.context["cl"].result_count == count.number

    v = world.v
    assert landed == {
        ("today", "all"): [v(world.p3, "V1").pk],
        ("week", "all"): [v(world.p4, "V1").pk],
        ("due", "all"): [v(world.p1, "V3C").pk],
        ("due", "closing within 3 days"): [v(world.p1, "V3C").pk],
        ("overdue", "all"): [v(world.p2, "V1").pk],
        ("missed", "all"): [v(world.p1, "V3").pk],
        ("deviation", "all"): [v(world.p1, "V1").pk],
        ("taper", "all"): [],
        ("outbox", "email"): [world.dead_email.pk],
        ("outbox", "webhook deliveries"): [world.failed_webhook.pk],
    }


def test_a_user_of_two_sites_sees_each_on_its_own_today(
    world: World, now: None, client: Any
) -> None:
    user = staff("coordinator-both", trial=world.niams.trial, site=world.ny)
    member(user, trial=world.tsukuba_version.trial, site=world.tokyo)

    blocks = start_page(client, user).context["site_blocks"]

    assert [(b["site"].code, b["today"], b["clock"]) for b in blocks] == [
        ("nih-cc", D(2026, 3, 10), "Tue 10 Mar 2026 12:00 EDT"),
        ("tsukuba", D(2026, 3, 11), "Wed 11 Mar 2026 01:00 JST"),
    ]
    tokyo = blocks[1]
    taper = world.t1.milestones.get(rule__code="PSL_TAPER", sequence=2)
    assert rows(tokyo) == {
        "today": [
            (
                "T-001",
                "INF#1 – Anifrolumab infusion visit",
                "Wed 11 Mar 2026 10:00 JST",
                "Anifrolumab 300 mg infusion (IV), "
                "Lupus low disease activity state (LLDAS) assessment, SLEDAI-2K assessment, "
                "Blood tests (complement C3, C4, CH50, anti-DNA antibodies), "
                "Research blood sample (IFN signature, lymphocytes, cytokines)",
                "Infusion chair",
                "out of window",
                "Record done",
                url("scheduler_scheduledvisit_record_done", visit(world.t1, "INF").pk),
            )
        ],
        "taper": [
            (
                "T-001",
                "PSL_TAPER week 2: 31 mg/day",
                "2026-03-16",
                "—",
                "—",
                "Planned",
                "Taper decision",
                url("participants_participant_taper", world.t1.pk),
            )
        ],
        "outbox": [
            (
                "T-001",
                "overdue · in-app notices",
                rows_when(world.dead_tokyo),
                "—",
                "—",
                "dead (gave up) after 5 attempts",
                "Retry",
                url("scheduler_reminder_changelist"),
            )
        ],
    }
    (taper_count,) = tokyo["sections"][-2].counts
    listed = client.get(taper_count.url)
    assert [m.pk for m in listed.context["cl"].result_list] == [taper.pk]


def test_a_blinded_role_sees_no_arm_and_a_read_only_role_no_write_action(
    world: World, now: None, client: Any
) -> None:
    pharmacist = staff(
        "pharmacist-ny", trial=world.niams.trial, site=world.ny, role="unblinded_pharmacist"
    )
    monitor = staff("monitor", trial=world.niams.trial, site=None, role="sponsor_monitor")

    for user in (pharmacist, monitor):
        response = start_page(client, user)
        html = response.content.decode()
        (block,) = response.context["site_blocks"]
        actions = {row[6] for section in rows(block).values() for row in section}
        assert actions == {"View"}
        # The start page names no arm to anyone (the arm has its own page).
        assert ("Anifrolumab" in html, "Placebo" in html, "PBO" in html) == (False, False, False)


def test_a_data_manager_keeps_djangos_index(world: World, now: None, client: Any) -> None:
    manager = staff("dm", trial=world.niams.trial, site=None, role="data_manager")
    response = start_page(client, manager)
    assert response.templates[0].name == "admin/index.html"
    assert "site_blocks" not in response.context


def test_nobody_without_a_membership_gets_a_start_page(
    world: World, now: None, client: Any, admin_user: Any
) -> None:
    response = start_page(client, admin_user)
    assert response.templates[0].name == "admin/index.html"


def test_the_retry_button_re_queues_the_dead_reminder(
    world: World, coordinator: Any, now: None, client: Any
) -> None:
    (block,) = start_page(client, coordinator).context["site_blocks"]
    outbox = next(s for s in block["sections"] if s.key == "outbox")
    dead = next(row for row in outbox.rows if row.who.label == "P-001")

    response = client.post(dead.action.url, dead.action.post)

    assert response.status_code == 302
    world.dead_email.refresh_from_db()
    world.failed_webhook.refresh_from_db()
    assert (world.dead_email.status, world.failed_webhook.status) == ("pending", "failed")


def test_the_book_button_opens_the_booking_form_with_the_window(
    world: World, coordinator: Any, now: None, client: Any
) -> None:
    (block,) = start_page(client, coordinator).context["site_blocks"]
    due = next(s for s in block["sections"] if s.key == "due")

    form = client.get(due.rows[0].action.url)

    assert form.status_code == 200
    assert "window 2026-03-07 to 2026-03-11" in form.content.decode()


def more_work(world: World, builder: Any) -> None:
    """Three more participants at New York, with a visit due, one booked today, and more
    failed reminders: more rows in every kind of section."""
    with at(D(2026, 1, 4)):
        extra = [
            niams_participant(world.niams, world.ny, f"P-01{n}", D(2026, 3, 31), "ANI")
            for n in range(3)
        ]
    with at(D(2026, 3, 1)):
        visit_book(
            visit=visit(extra[0], "V1"),
            local_date=D(2026, 3, 10),
            local_time=dt.time(11),
            by=builder,
        )
    Reminder.objects.filter(participant__in=extra).update(status=Reminder.Status.DEAD)


def test_the_start_page_costs_the_same_queries_at_two_sizes(
    world: World, coordinator: Any, builder: Any, client: Any
) -> None:
    sign_in(client, coordinator)

    def measure() -> tuple[int, int]:
        with time_machine.travel(NOW, tick=False):
            coordinator.__dict__.pop("_memberships_cache", None)
            with CaptureQueriesContext(connection) as selector:
                workspace_for(coordinator)
            with CaptureQueriesContext(connection) as page:
                assert client.get(reverse("admin:index")).status_code == 200
        return len(selector), len(page)

    small = measure()
    more_work(world, builder)
    large = measure()

    assert small == large
    # Memberships, sites, three counts, the visits' ranking, three row lists and the rows'
    # procedures.
    assert small[0] == 10
