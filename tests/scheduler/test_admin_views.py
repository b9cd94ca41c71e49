"""The admin's calendar actions: preview writes nothing, confirm writes once, stale pages are
refused; the audit trail is shown and never edited; status counts cost a fixed number of
queries."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
import time_machine
from django.urls import reverse

from participants.models import Participant, TreatmentAssignment
from scheduler.calendar import CalendarDiff, MilestoneChange, VisitChange
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit, TaperAdjustment
from scheduler.services import participant_enroll, visit_book, visit_cancel, visit_record_done
from tests.conftest import sign_in
from tests.factories import member, member_of_every_trial_site, participant_for
from trials.models import Arm, TrialSite

D = dt.date
NOW = dt.datetime(2026, 12, 31, 12, 0, tzinfo=dt.UTC)
# Before the NIAMS calendar's March visits: a booking is refused in the past at the site, so
# tests that book them run on this day.
FEBRUARY = dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def february(frozen_clock):
    with time_machine.travel(FEBRUARY, tick=False):
        yield


@pytest.fixture
def niams(import_seed) -> Participant:
    participant = participant_for(
        import_seed("000"), anchors={"day1": D(2026, 2, 2)}, birth_date=D(1980, 6, 15)
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


@pytest.fixture
def tsukuba(import_seed) -> Participant:
    participant = participant_for(
        import_seed("001"),
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
        weight_kg=Decimal(60),
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


class _Tables(HTMLParser):
    """The text of each cell of each table with an id, row by row (header rows skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id"):
            self._table = dict(attrs)["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(response: Any) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(response.content.decode())
    return parser.tables


def visit(participant: Participant, code: str, occurrence: int = 1) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code, occurrence=occurrence
    )


def visit_rows(participant: Participant) -> list[tuple]:
    return list(
        ScheduledVisit.objects.filter(participant=participant)
        .order_by("id")
        .values_list(
            "id",
            "status",
            "target_date",
            "window_start",
            "window_end",
            "booked_start",
            "booked_date",
            "actual_date",
            "deviation_days",
            "reason",
            "version",
        )
    )


def audit_entries() -> int:
    return (
        ScheduledVisit.history.count()
        + ScheduledMilestone.history.count()
        + ScheduledProcedure.history.count()
        + Participant.history.count()
    )


def action_url(obj: ScheduledVisit | Participant, name: str) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[obj.pk])


def change_url(obj: Any) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def errors(response: Any) -> list[str]:
    return list(response.context["form"].non_field_errors())


# ----------------------------------------------------------------------------------------
# Book / reschedule


def test_book_form_shows_the_visit_and_its_site_timezone(admin_client, niams) -> None:
    v3 = visit(niams, "V3")

    response = admin_client.get(action_url(v3, "book"))

    assert response.status_code == 200
    assert tables(response)["lifecycle-summary"] == [
        [str(niams)],
        ["V3 – Treatment visit 2 (week 4)"],
        # Its window closed in March with nothing recorded: overdue, not "Planned".
        ["overdue"],
        ["2026-03-02 (window 2026-02-27 to 2026-03-05)"],
        ["—"],
        [f"{niams.site.name}; times are site-local, America/New_York"],
        ["1"],
    ]
    # No date in the past is offered; the page says why.
    assert response.context["form"].initial == {"version": 1}
    assert response.context["note"] == (
        "The window of V3 (2026-02-27 to 2026-03-05) closed before today at the site "
        "(2026-12-31), so no date is suggested. A later date is a protocol deviation and needs "
        "a reason; to record a visit that already happened, use “Record done”."
    )


def test_book_form_offers_the_target_day_while_it_is_ahead(february, admin_client, niams) -> None:
    response = admin_client.get(action_url(visit(niams, "V3"), "book"))

    assert tables(response)["lifecycle-summary"][2] == ["upcoming"]
    assert response.context["form"].initial == {"version": 1, "local_date": D(2026, 3, 2)}


def test_book_preview_writes_nothing_and_shows_the_moved_visit(
    february, admin_client, niams
) -> None:
    v3 = visit(niams, "V3")
    before, entries = visit_rows(niams), audit_entries()

    response = admin_client.post(
        action_url(v3, "book"),
        {"local_date": "2026-03-08", "local_time": "09:30", "reason": "travel", "version": "1"},
    )

    assert response.status_code == 200
    assert (visit_rows(niams), audit_entries()) == (before, entries)
    assert response.context["outcome"] == [
        ("Booked at the site", "Sun 8 Mar 2026 09:30 EDT", False),
        ("Booked in UTC", "Sun 8 Mar 2026 13:30 UTC", False),
        (
            "Deviation",
            "3 day(s) after the window (2026-02-27 to 2026-03-05): a protocol deviation",
            True,
        ),
        ("Reason", "travel", False),
    ]
    assert response.context["diff"] == CalendarDiff(
        visits=(
            VisitChange(
                "V3C",
                1,
                D(2026, 3, 9),
                (D(2026, 3, 7), D(2026, 3, 11)),
                D(2026, 3, 15),
                (D(2026, 3, 13), D(2026, 3, 17)),
                None,
                "1.0",
                "1.0",
            ),
        )
    )
    assert tables(response)["visit-changes"] == [
        [
            "V3C",
            "1",
            "moved",
            "2026-03-09",
            "2026-03-07 to 2026-03-11",
            "2026-03-15",
            "2026-03-13 to 2026-03-17",
            "—",
            "no",
        ]
    ]


def test_book_confirm_writes_the_booking_and_moves_what_counts_from_it(
    february, admin_client, admin_user, niams
) -> None:
    v3 = visit(niams, "V3")

    response = admin_client.post(
        action_url(v3, "book"),
        {
            "local_date": "2026-03-08",
            "local_time": "09:30",
            "reason": "travel",
            "version": "1",
            "_confirm": "Confirm booking",
        },
    )

    assert (response.status_code, response["Location"]) == (302, change_url(v3))
    booked = visit(niams, "V3")
    assert (
        booked.status,
        booked.booked_start,
        booked.booked_date,
        booked.deviation_days,
        booked.reason,
        booked.version,
    ) == ("booked", dt.datetime(2026, 3, 8, 13, 30, tzinfo=dt.UTC), D(2026, 3, 8), 3, "travel", 2)
    assert visit(niams, "V3C").target_date == D(2026, 3, 15)
    assert [
        (entry.history_user, entry.history_change_reason)
        for entry in booked.history.order_by("history_id")
    ] == [(None, "enrolled"), (admin_user, "travel")]
    assert [str(m) for m in admin_client.get(change_url(v3)).context["messages"]] == [
        "V3 booked for Sun 8 Mar 2026 09:30 EDT; re-planned: V3C moved (2026-03-09 → 2026-03-15)."
    ]


def test_book_confirm_from_a_stale_page_gets_the_conflict_and_writes_nothing(
    february, admin_client, admin_user, niams
) -> None:
    v3 = visit(niams, "V3")
    visit_book(visit=v3, local_date=D(2026, 3, 2), local_time=dt.time(9, 0), by=admin_user)
    before, entries = visit_rows(niams), audit_entries()

    response = admin_client.post(
        action_url(v3, "book"),
        {
            "local_date": "2026-03-04",
            "local_time": "10:00",
            "reason": "participant asked",
            "version": "1",
            "_confirm": "Confirm booking",
        },
    )

    assert response.status_code == 200
    assert (visit_rows(niams), audit_entries()) == (before, entries)
    assert errors(response) == [
        f"V3 of {niams} was changed by someone else since you opened it (it is at version 2, "
        "yours is 1); reload it and try again"
    ]
    # The page shows the visit as it is now, so the next preview is made against version 2.
    assert response.context["form"]["version"].value() == "2"
    assert response.context["summary"][-1] == ("Version", "2")


def test_book_confirm_refused_by_the_service_shows_why_and_writes_nothing(
    february, admin_client, niams
) -> None:
    v3 = visit(niams, "V3")
    before, entries = visit_rows(niams), audit_entries()

    response = admin_client.post(
        action_url(v3, "book"),
        {"local_date": "2026-03-08", "local_time": "09:30", "version": "1", "_confirm": "yes"},
    )

    assert response.status_code == 200
    assert (visit_rows(niams), audit_entries()) == (before, entries)
    assert errors(response) == [
        "a reason is required: 2026-03-08 is 3 days after the window of V3 "
        "(2026-02-27 to 2026-03-05)"
    ]


def test_visit_actions_need_a_write_role(client, django_user_model, niams) -> None:
    staff = django_user_model.objects.create_user("monitor", password="pw", is_staff=True)
    member(staff, trial=niams.trial, role="sponsor_monitor")
    sign_in(client, staff)
    v3 = visit(niams, "V3")

    statuses = [
        client.get(action_url(v3, name)).status_code
        for name in ("book", "record_done", "mark_missed", "cancel")
    ]
    page = client.get(change_url(v3))

    assert statuses == [403, 403, 403, 403]
    assert (page.status_code, page.context.get("lifecycle_actions")) == (200, None)


def test_visit_page_links_its_actions_while_the_visit_is_open(admin_client, niams) -> None:
    v3 = visit(niams, "V3")

    page = admin_client.get(change_url(v3))

    assert page.context["lifecycle_actions"] == [
        ("Book / reschedule", action_url(v3, "book")),
        ("Record done", action_url(v3, "record_done")),
        ("Mark missed", action_url(v3, "mark_missed")),
        ("Cancel visit", action_url(v3, "cancel")),
    ]


# ----------------------------------------------------------------------------------------
# Record done, missed, cancelled


def test_record_done_with_a_procedure_not_done_previews_then_records_it(
    admin_client, niams
) -> None:
    v2 = visit(niams, "V2")
    posted = {
        "actual_date": "2026-02-02",
        "actual_time": "08:45",
        "reason": "",
        "version": "1",
        "not_done_FDGPET": "on",
        "not_done_reason_FDGPET": "scanner out of service",
    }
    before, entries = visit_rows(niams), audit_entries()

    preview = admin_client.post(action_url(v2, "record_done"), posted)
    unchanged = (visit_rows(niams), audit_entries())
    confirm = admin_client.post(action_url(v2, "record_done"), {**posted, "_confirm": "yes"})

    assert unchanged == (before, entries)
    assert preview.context["outcome"] == [
        ("Done on (site-local)", "2026-02-02", False),
        ("At", "08:45", False),
        ("Deviation", "none: inside the window (2026-02-02 to 2026-02-02)", False),
        ("FDGPET not done", "scanner out of service", True),
        ("Reason", "—", False),
    ]
    assert preview.context["diff"] == CalendarDiff()
    assert confirm.status_code == 302
    done = visit(niams, "V2")
    assert (done.status, done.actual_date, done.actual_start, done.version) == (
        "done",
        D(2026, 2, 2),
        dt.datetime(2026, 2, 2, 13, 45, tzinfo=dt.UTC),
        2,
    )
    assert sorted(done.procedures.values_list("procedure__code", "status", "not_done_reason")) == [
        ("CAVI", "done", ""),
        ("EXAM", "done", ""),
        ("FDGPET", "not_done", "scanner out of service"),
        ("INFUSION", "done", ""),
        ("LABS", "done", ""),
        ("SLEQ", "done", ""),
    ]


def test_mark_missed_asks_to_confirm_then_releases_what_counted_from_the_booking(
    february, admin_client, admin_user, niams
) -> None:
    v3 = visit(niams, "V3")
    visit_book(visit=v3, local_date=D(2026, 3, 4), local_time=dt.time(9, 0), by=admin_user)
    posted = {"reason": "did not attend", "version": "2"}

    confirm_page = admin_client.post(action_url(v3, "mark_missed"), posted)
    status_before_confirm = visit(niams, "V3").status
    done = admin_client.post(action_url(v3, "mark_missed"), {**posted, "_confirm": "yes"})

    assert (confirm_page.status_code, status_before_confirm) == (200, "booked")
    assert confirm_page.context["outcome"] == [
        ("Visit", "V3 will be recorded as missed", True),
        ("Reason", "did not attend", False),
    ]
    assert done.status_code == 302
    assert (visit(niams, "V3").status, visit(niams, "V3C").target_date) == (
        "missed",
        D(2026, 3, 9),
    )


def test_cancel_needs_a_reason(admin_client, niams) -> None:
    v5 = visit(niams, "V5")

    response = admin_client.post(action_url(v5, "cancel"), {"reason": "", "version": "1"})

    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert visit(niams, "V5").status == "planned"


# ----------------------------------------------------------------------------------------
# Participant actions


def test_withdraw_lists_what_will_be_cancelled_then_withdraws(admin_client, niams) -> None:
    posted = {"on": "2026-05-01", "reason": "moved abroad"}
    before, entries = visit_rows(niams), audit_entries()

    preview = admin_client.post(action_url(niams, "withdraw"), posted)
    unchanged = (visit_rows(niams), audit_entries())
    confirm = admin_client.post(action_url(niams, "withdraw"), {**posted, "_confirm": "yes"})

    assert unchanged == (before, entries)
    # Their status at a glance on 31 December: every window has closed unrecorded.
    assert tables(preview)["cancelled-visits"] == [
        ["V6", "overdue", "2026-05-25", "—"],
        ["V7", "overdue", "2026-06-22", "—"],
        ["V8", "overdue", "2026-07-20", "—"],
        ["V9", "overdue", "2026-08-17", "—"],
        ["V10", "overdue", "2026-09-14", "—"],
        ["V11", "overdue", "2026-10-12", "—"],
    ]
    assert tables(preview)["cancelled-milestones"] == [
        ["CONTRACEPTION_END", "0", "2027-01-04", "—"]
    ]
    assert (confirm.status_code, confirm["Location"]) == (302, change_url(niams))
    niams.refresh_from_db()
    assert (niams.status, niams.ended_on) == ("withdrawn", D(2026, 5, 1))
    assert sorted(
        ScheduledVisit.objects.filter(participant=niams, status="cancelled").values_list(
            "visit_definition__code", flat=True
        )
    ) == ["V10", "V11", "V6", "V7", "V8", "V9"]


@pytest.mark.parametrize(
    ("on", "words"),
    [
        # The site (New York) is at 31 December, 07:00 when it is 12:00 UTC.
        (
            "2027-01-01",
            "a participation ends on or before the site's today (2026-12-31), not on 2027-01-01",
        ),
        (
            "2026-01-04",
            "a participation ends on or after its enrollment (2026-01-05), not on 2026-01-04",
        ),
    ],
)
@pytest.mark.parametrize("action", ["withdraw", "complete"])
def test_an_end_date_out_of_range_is_refused_at_the_preview_beside_the_date(
    admin_client, niams, on, words, action
) -> None:
    if action == "complete":
        ScheduledVisit.objects.filter(participant=niams).update(status="cancelled")
    posted = {"on": on, "reason": "moved abroad"}
    before, entries = visit_rows(niams), audit_entries()

    preview = admin_client.post(action_url(niams, action), posted)
    confirm = admin_client.post(action_url(niams, action), {**posted, "_confirm": "yes"})

    for response in (preview, confirm):
        assert response.status_code == 200
        assert response.context["form"].errors == {"on": [words]}
    assert (visit_rows(niams), audit_entries()) == (before, entries)
    niams.refresh_from_db()
    assert (niams.status, niams.ended_on) == ("enrolled", None)


def test_anchor_change_previews_the_moved_calendar_then_applies_it(admin_client, niams) -> None:
    posted = {"code": "day1", "new_date": "2026-02-09", "reason": "infusion chair unavailable"}

    preview = admin_client.post(action_url(niams, "anchor"), posted)
    day1_before_confirm = niams.anchors.get(code="day1").date
    confirm = admin_client.post(action_url(niams, "anchor"), {**posted, "_confirm": "yes"})

    assert day1_before_confirm == D(2026, 2, 2)
    assert [(c.visit_code, c.old_target, c.new_target) for c in preview.context["diff"].visits] == [
        ("V1", D(2026, 1, 12), D(2026, 1, 19)),
        ("V2", D(2026, 2, 2), D(2026, 2, 9)),
        ("V3", D(2026, 3, 2), D(2026, 3, 9)),
        ("V3C", D(2026, 3, 9), D(2026, 3, 16)),
        ("V4", D(2026, 3, 30), D(2026, 4, 6)),
        ("V5", D(2026, 4, 27), D(2026, 5, 4)),
        ("V6", D(2026, 5, 25), D(2026, 6, 1)),
        ("V7", D(2026, 6, 22), D(2026, 6, 29)),
        ("V8", D(2026, 7, 20), D(2026, 7, 27)),
        ("V9", D(2026, 8, 17), D(2026, 8, 24)),
        ("V10", D(2026, 9, 14), D(2026, 9, 21)),
        ("V11", D(2026, 10, 12), D(2026, 10, 19)),
    ]
    assert confirm.status_code == 302
    assert (niams.anchors.get(code="day1").date, visit(niams, "V2").target_date) == (
        D(2026, 2, 9),
        D(2026, 2, 9),
    )


def test_anchor_preview_outside_its_allowed_range_shows_the_refusal(admin_client, tsukuba) -> None:
    response = admin_client.post(
        action_url(tsukuba, "anchor"),
        {"code": "day1", "new_date": "2027-03-02", "reason": "typo"},
    )

    assert response.status_code == 200
    assert errors(response) == [
        "Anifrolumab Day 1 (first infusion) (2027-03-02) is 365 day(s) after Prednisolone "
        "(PSL) start; the protocol allows at most 14"
    ]


def test_taper_hold_previews_the_shifted_steps_then_records_the_decision(
    admin_client, admin_user, tsukuba
) -> None:
    posted = {"milestone_code": "PSL_TAPER", "week": "4", "dose_mg": "", "reason": "flare"}

    preview = admin_client.post(action_url(tsukuba, "taper"), posted)
    decisions_before_confirm = TaperAdjustment.objects.count()
    confirm = admin_client.post(action_url(tsukuba, "taper"), {**posted, "_confirm": "yes"})

    assert decisions_before_confirm == 0
    assert preview.context["outcome"][2] == ("Decision", "held at last week's dose", False)
    assert preview.context["diff"].milestones[-1] == MilestoneChange(
        "PSL_TAPER", 13, None, D(2026, 6, 1), None, Decimal(7), ""
    )
    assert confirm.status_code == 302
    assert list(
        TaperAdjustment.objects.values_list(
            "milestone_code", "week", "kind", "dose_mg", "decided_by"
        )
    ) == [("PSL_TAPER", 4, "hold", None, admin_user.pk)]


def test_unscheduled_visit_is_previewed_then_added_with_its_procedures(
    february, admin_client, niams
) -> None:
    wanted = {
        "local_date": "2026-04-10",
        "local_time": "14:00",
        "reason": "lupus flare: rash and fever",
        "procedure_codes": ["EXAM", "LABS"],
    }
    preview = admin_client.post(action_url(niams, "unscheduled_visit"), wanted)
    written = ScheduledVisit.objects.filter(participant=niams, visit_definition=None).count()

    response = admin_client.post(
        action_url(niams, "unscheduled_visit"), {**wanted, "_confirm": "1"}
    )

    assert (preview.status_code, written) == (200, 0)
    assert [(label, value) for label, value, _ in preview.context["outcome"]][:1] == [
        ("When", "Fri 10 Apr 2026 14:00 EDT")
    ]
    flare = ScheduledVisit.objects.get(participant=niams, visit_definition=None)
    assert (response.status_code, response["Location"]) == (302, change_url(flare))
    assert (flare.status, flare.booked_start, flare.unscheduled_reason) == (
        "booked",
        dt.datetime(2026, 4, 10, 18, 0, tzinfo=dt.UTC),
        "lupus flare: rash and fever",
    )
    assert sorted(flare.procedures.values_list("procedure__code", flat=True)) == ["EXAM", "LABS"]


# ----------------------------------------------------------------------------------------
# Status at a glance


def test_participant_changelist_shows_visit_status_counts(admin_client, admin_user, niams) -> None:
    visit_record_done(visit=visit(niams, "V1"), actual_date=D(2026, 1, 12), by=admin_user)
    visit_record_done(
        visit=visit(niams, "V2"), actual_date=D(2026, 2, 3), by=admin_user, reason="late"
    )
    visit_book(
        visit=visit(niams, "V11"),
        local_date=D(2027, 1, 5),
        local_time=dt.time(9, 0),
        by=admin_user,
        reason="catch-up",
    )

    response = admin_client.get(reverse("admin:participants_participant_changelist"))

    # No checkbox column: clinical rows are never deleted in bulk, so the list has no actions.
    # Study id (the row's header), where, status, the enrollment's day at the site (its `on`,
    # not the day it was recorded), then due, overdue, booked, out of window and missed.
    assert tables(response)["result_list"] == [
        [
            f"{niams.trial.code}{niams.site.code}",
            "Enrolled",
            "2026-01-05",
            "0",
            "9",
            "1",
            "2",
            "0",
        ]
    ]


def test_site_changelist_adds_up_the_visit_status_of_its_participants(
    admin_client, admin_user, import_seed
) -> None:
    version = import_seed("000")
    first = participant_for(version, anchors={"day1": D(2026, 2, 2)}, study_id="P-001")
    second = participant_for(
        version, anchors={"day1": D(2026, 12, 5)}, site=first.site, study_id="P-002"
    )
    for participant in (first, second):
        participant_enroll(participant=participant, on=D(2026, 1, 5))
    visit_record_done(visit=visit(first, "V1"), actual_date=D(2026, 1, 12), by=admin_user)

    response = admin_client.get(reverse("admin:trials_site_changelist"))

    assert tables(response)["result_list"] == [
        [first.site.name, "America/New_York", "US", "1", "0", "1", "0", "0", "13"]
    ]


# Each list page costs a fixed number of queries whatever the number of rows (no N+1).
# Values: (queries, rows per enrolled NIAMS participant). One of them reads the user's
# memberships, once per request (scheduler/access.py); one the second factor the superuser's
# session was verified with (django-otp's middleware).
CHANGELIST_QUERIES = {
    "participants_participant": (9, 1),
    "trials_site": (7, 1),
    "scheduler_scheduledvisit": (11, 12),
    "scheduler_scheduledmilestone": (9, 1),
    "scheduler_historicalscheduledvisit": (11, 12),
    "scheduler_historicalscheduledmilestone": (11, 1),
}


@pytest.mark.parametrize("changelist", sorted(CHANGELIST_QUERIES))
@pytest.mark.parametrize("enrolled", [2, 6])
def test_changelists_cost_the_same_queries_at_any_size(
    admin_client, import_seed, django_assert_num_queries, changelist, enrolled
) -> None:
    version = import_seed("000")
    for number in range(enrolled):
        participant = participant_for(
            version, anchors={"day1": D(2026, 2, 2)}, study_id=f"P-{number:03d}"
        )
        participant_enroll(participant=participant, on=D(2026, 1, 5))
    url = reverse(f"admin:{changelist}_changelist")

    queries, rows_each = CHANGELIST_QUERIES[changelist]

    with django_assert_num_queries(queries):
        response = admin_client.get(url)

    assert response.context["cl"].result_count == rows_each * enrolled


def test_visit_changelist_filters_overdue_and_out_of_window(
    admin_client, admin_user, niams
) -> None:
    visit_record_done(
        visit=visit(niams, "V2"), actual_date=D(2026, 2, 3), by=admin_user, reason="late"
    )
    url = reverse("admin:scheduler_scheduledvisit_changelist")

    out_of_window = admin_client.get(url, {"attention": "out_of_window"})
    overdue = admin_client.get(url, {"attention": "overdue"})

    assert [v.code for v in out_of_window.context["cl"].result_list] == ["V2"]
    assert [v.code for v in overdue.context["cl"].result_list] == [
        "V1",
        "V3",
        "V3C",
        "V4",
        "V5",
        "V6",
        "V7",
        "V8",
        "V9",
        "V10",
        "V11",
    ]


# ----------------------------------------------------------------------------------------
# The audit trail


def test_visit_history_shows_who_changed_what_and_why(
    february, admin_client, admin_user, niams
) -> None:
    v3 = visit(niams, "V3")
    visit_book(
        visit=v3,
        local_date=D(2026, 3, 8),
        local_time=dt.time(9, 30),
        by=admin_user,
        reason="site closed",
    )

    response = admin_client.get(reverse("admin:scheduler_scheduledvisit_history", args=[v3.pk]))

    assert response.status_code == 200
    assert [row[2:5] for row in tables(response)["change-history"]] == [
        ["Changed", "admin", "site closed"],
        ["Created", "None", "enrolled"],
    ]
    assert tables(response)["change-history"][0][5] == (
        "Booked date: None → 2026-03-08 "
        "Booked start: None → 2026-03-08 13:30:00+00:00 "
        "Deviation days: None → 3 "
        "Ical sequence: 0 → 1 "
        "Reason: → site closed "
        "Status: planned → booked "
        "Version: 1 → 2"
    )


def test_history_pages_never_save_what_is_posted(admin_client, niams) -> None:
    first = niams.history.earliest("history_date")
    url = reverse("admin:participants_participant_simple_history", args=[niams.pk, first.pk])

    page = admin_client.get(url)
    posted = admin_client.post(url, {"study_id": "CHANGED", "birth_date": "1990-01-01"})

    niams.refresh_from_db()
    assert (page.status_code, list(page.context["adminform"].form.fields)) == (200, [])
    assert posted.status_code == 405
    assert (niams.study_id, niams.birth_date) == ("P-001", D(1980, 6, 15))


def test_audit_trail_admins_are_read_only(admin_client, niams) -> None:
    statuses = {}
    for model in ("historicalscheduledvisit", "historicalscheduledmilestone"):
        entry = (
            ScheduledVisit.history.first()
            if model == "historicalscheduledvisit"
            else ScheduledMilestone.history.first()
        )
        assert entry is not None
        statuses[model] = (
            admin_client.get(reverse(f"admin:scheduler_{model}_changelist")).status_code,
            admin_client.get(reverse(f"admin:scheduler_{model}_add")).status_code,
            admin_client.post(
                reverse(f"admin:scheduler_{model}_change", args=[entry.pk]), {"reason": "x"}
            ).status_code,
            admin_client.post(
                reverse(f"admin:scheduler_{model}_delete", args=[entry.pk]), {"post": "yes"}
            ).status_code,
        )

    assert statuses == {
        "historicalscheduledvisit": (200, 403, 403, 403),
        "historicalscheduledmilestone": (200, 403, 403, 403),
    }
    assert ScheduledVisit.history.count() == 12


def test_blinded_treatment_history_is_hidden_without_the_unblinded_role(
    client, django_user_model, import_seed
) -> None:
    version = import_seed("000")
    participant = participant_for(version, anchors={"day1": D(2026, 2, 2)})
    participant_enroll(
        participant=participant, on=D(2026, 1, 5), arm=Arm.objects.get(version=version, code="ANI")
    )
    assignment = TreatmentAssignment.objects.get(participant=participant)
    entry = assignment.history.get()
    blinded = django_user_model.objects.create_user("monitor", password="pw", is_staff=True)
    member(blinded, trial=version.trial, role="sponsor_monitor")
    unblinded = django_user_model.objects.create_user("pharmacist", password="pw", is_staff=True)
    member(unblinded, trial=version.trial, site=participant.site, role="unblinded_pharmacist")
    history = reverse("admin:participants_treatmentassignment_history", args=[assignment.pk])
    version_page = reverse(
        "admin:participants_treatmentassignment_simple_history",
        args=[assignment.pk, entry.pk],
    )

    seen = {}
    for user in (blinded, unblinded):
        sign_in(client, user)
        seen[user.username] = (
            client.get(history).status_code,
            client.get(version_page).status_code,
        )

    assert seen == {"monitor": (404, 404), "pharmacist": (200, 200)}


def test_every_audited_admin_shows_its_history(admin_client, admin_user, import_seed) -> None:
    version = import_seed("000")
    participant = participant_for(version, anchors={"day1": D(2026, 2, 2)})
    # The arm of a blinded trial: only an unblinded role sees it, and its history.
    member(admin_user, trial=version.trial, site=participant.site, role="unblinded_pharmacist")
    participant_enroll(
        participant=participant, on=D(2026, 1, 5), arm=Arm.objects.get(version=version, code="PBO")
    )
    records = [
        participant,
        visit(participant, "V2"),
        ScheduledMilestone.objects.get(participant=participant),
        TreatmentAssignment.objects.get(participant=participant),
        version,
        TrialSite.objects.get(trial=version.trial, site=participant.site),
    ]

    titles = {}
    for record in records:
        opts = record._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[record.pk])
        response = admin_client.get(url)
        titles[opts.model_name] = (response.status_code, response.context["title"])

    assert titles == {
        "participant": (200, f"View history: {participant}"),
        "scheduledvisit": (200, f"View history: {visit(participant, 'V2')}"),
        "scheduledmilestone": (200, f"View history: {records[2]}"),
        "treatmentassignment": (200, f"View history: {records[3]}"),
        "protocolversion": (200, f"View history: {version}"),
        "trialsite": (200, f"View history: {records[5]}"),
    }


def test_participant_page_links_the_calendar_actions_and_shows_anchors_read_only(
    admin_client, niams, tsukuba
) -> None:
    niams_page = admin_client.get(change_url(niams))
    tsukuba_page = admin_client.get(change_url(tsukuba))

    assert [label for label, _ in niams_page.context["lifecycle_actions"]] == [
        "Withdraw",
        "Change anchor date",
        "Add unscheduled visit",
        "Complete the study",
    ]
    assert tsukuba_page.context["lifecycle_actions"] == [
        ("Withdraw", action_url(tsukuba, "withdraw")),
        ("Change anchor date", action_url(tsukuba, "anchor")),
        ("Taper decision", action_url(tsukuba, "taper")),
        ("Add unscheduled visit", action_url(tsukuba, "unscheduled_visit")),
        ("Complete the study", action_url(tsukuba, "complete")),
    ]
    anchors = niams_page.context["inline_admin_formsets"][0]
    assert (anchors.has_add_permission, anchors.has_change_permission) == (False, False)
    # Only the hidden keys of the row are inputs; its code and date are text.
    assert re.findall(r'name="(anchors-0-[^"]+)"', niams_page.content.decode()) == [
        "anchors-0-id",
        "anchors-0-participant",
    ]


# ----------------------------------------------------------------------------------------
# The rest of the lifecycle through the one preview → confirm view: complete, screen failed,
# move onto an amendment


def test_complete_is_refused_at_the_preview_while_visits_are_open(admin_client, niams) -> None:
    before = audit_entries()

    response = admin_client.post(action_url(niams, "complete"), {"on": "2026-12-31", "reason": ""})

    assert response.status_code == 200
    assert errors(response)[0].startswith(f"{niams} still has open visits: V1 (overdue), ")
    assert errors(response)[0].endswith("; record, miss or cancel them first")
    assert (Participant.objects.get(pk=niams.pk).status, audit_entries()) == ("enrolled", before)


def test_complete_previews_then_completes_once_every_visit_is_closed(
    admin_client, admin_user, niams
) -> None:
    for row in ScheduledVisit.objects.filter(participant=niams):
        visit_cancel(visit=row, by=admin_user, reason="sponsor closed the study")
    wanted = {"on": "2026-12-30", "reason": ""}

    preview = admin_client.post(action_url(niams, "complete"), wanted)
    unchanged = Participant.objects.get(pk=niams.pk).status
    done = admin_client.post(action_url(niams, "complete"), {**wanted, "_confirm": "1"})

    niams.refresh_from_db()
    assert [(label, value) for label, value, _ in preview.context["outcome"]] == [
        ("Completed on", "2026-12-30"),
        ("Reason", "completed the study"),
    ]
    assert (unchanged, done.status_code, done["Location"]) == ("enrolled", 302, change_url(niams))
    assert (niams.status, niams.ended_on) == ("completed", D(2026, 12, 30))
    assert niams.history.latest().history_change_reason == "completed the study"


def test_screen_failure_cancels_what_is_open_and_records_the_reason(
    admin_client, admin_user, import_seed
) -> None:
    screening = participant_for(import_seed("000"), anchors={"day1": D(2027, 1, 11)})
    open_before = ScheduledVisit.objects.filter(
        participant=screening, status__in=ScheduledVisit.OPEN
    ).count()
    wanted = {"on": "2026-12-31", "reason": "eGFR below 30 at screening"}

    blank = admin_client.post(action_url(screening, "screen_fail"), {**wanted, "reason": " "})
    future = admin_client.post(action_url(screening, "screen_fail"), {**wanted, "on": "2027-01-01"})
    preview = admin_client.post(action_url(screening, "screen_fail"), wanted)
    done = admin_client.post(action_url(screening, "screen_fail"), {**wanted, "_confirm": "1"})

    screening.refresh_from_db()
    assert blank.context["form"].errors == {"reason": ["This field is required."]}
    assert future.context["form"].errors == {
        "on": [
            "a screen failure is recorded on or before the site's today (2026-12-31), "
            "not on 2027-01-01"
        ]
    }
    # Visits are planned at enrollment: nothing is open yet in screening.
    assert (preview.context["cancelled_visits"], open_before) == ([], 0)
    assert done.status_code == 302
    assert (screening.status, screening.ended_on) == ("screen_failed", D(2026, 12, 31))
    assert screening.history.latest().history_change_reason == "eGFR below 30 at screening"
    page = admin_client.get(change_url(screening))
    assert page.context.get("lifecycle_actions") is None  # nothing left to do


def test_moving_a_participant_onto_an_amendment_previews_the_calendar_that_moves(
    admin_client, tsukuba
) -> None:
    from tests.scheduler.test_amendments_and_audit import tsukuba_amendment

    v11 = tsukuba_amendment()
    wanted = {"version_id": str(v11.pk), "on": "2026-04-01", "reason": "amendment 1"}

    v10 = tsukuba.protocol_version_id
    preview = admin_client.post(action_url(tsukuba, "move_version"), wanted)
    still = Participant.objects.get(pk=tsukuba.pk).protocol_version_id
    done = admin_client.post(action_url(tsukuba, "move_version"), {**wanted, "_confirm": "1"})

    tsukuba.refresh_from_db()
    diff = preview.context["diff"]
    assert [(label, value) for label, value, _ in preview.context["outcome"]][1] == (
        "Moves to",
        str(v11),
    )
    assert sorted((c.visit_code, c.kind) for c in diff.visits if c.kind == "added") == [
        ("W28", "added")
    ]
    assert still == v10
    assert (done.status_code, tsukuba.protocol_version_id) == (302, v11.pk)
    assert (
        ScheduledVisit.objects.filter(participant=tsukuba, visit_definition__code="W28").count()
        == 1
    )


def test_an_action_opened_from_elsewhere_is_prefilled_and_returns_there(
    february, admin_client, niams, tsukuba
) -> None:
    taper = admin_client.get(action_url(tsukuba, "taper") + "?milestone_code=PSL&week=5&version=9")
    v3 = visit(niams, "V3")
    timeline = f"/admin/participants/participant/{niams.pk}/timeline/"
    booking = {
        "local_date": "2026-03-04",
        "local_time": "09:30",
        "reason": "",
        "version": str(v3.version),
        "_confirm": "1",
    }

    back = admin_client.post(action_url(v3, "book") + f"?next={timeline}", booking)
    v3.refresh_from_db()
    elsewhere = admin_client.post(
        action_url(v3, "book") + "?next=https://evil.example/",
        {**booking, "local_time": "10:00", "reason": "clinic", "version": str(v3.version)},
    )

    form = taper.context["form"]
    assert (form["milestone_code"].value(), form["week"].value()) == ("PSL", "5")
    assert "version" not in form.initial  # never taken from a link
    assert (back.status_code, back["Location"]) == (302, timeline)
    assert (elsewhere.status_code, elsewhere["Location"]) == (302, change_url(v3))


def test_a_deviation_done_without_a_reason_gets_one_and_nothing_else_moves(
    admin_client, admin_user, niams
) -> None:
    v2 = visit(niams, "V2")
    visit_record_done(visit=v2, actual_date=D(2026, 2, 3), by=admin_user, reason="late")
    # The services always ask for it; a deviation without one comes from data brought in
    # from another system (or written before the rule), and the start page lists it.
    ScheduledVisit.objects.filter(pk=v2.pk).update(reason="")
    v2.refresh_from_db()
    before = visit_rows(niams)
    url = action_url(v2, "deviation_reason")

    page = admin_client.get(change_url(v2))
    preview = admin_client.post(url, {"reason": " ", "version": str(v2.version)})
    done = admin_client.post(
        url, {"reason": "infusion chair broken", "version": str(v2.version), "_confirm": "1"}
    )
    again = admin_client.post(
        url, {"reason": "twice", "version": str(v2.version + 1), "_confirm": "1"}
    )

    v2.refresh_from_db()
    assert ("Give the deviation's reason", url) in page.context["lifecycle_actions"]
    assert preview.context["form"].errors == {"reason": ["This field is required."]}
    assert (done.status_code, v2.reason) == (302, "infusion chair broken")
    # One row changed, and only its reason and version.
    assert [
        (old[:-2], old[-2:], new[-2:])
        for old, new in zip(before, visit_rows(niams), strict=True)
        if old != new
    ] == [(before[1][:-2], ("", 2), ("infusion chair broken", 3))]
    assert errors(again) == [f"V2 of {niams} already has a reason"]
    assert v2.history.latest().history_change_reason == "deviation reason given"


def test_the_taper_decision_form_shows_the_schedule_it_changes(admin_client, tsukuba) -> None:
    page = admin_client.get(action_url(tsukuba, "taper"))

    rows = tables(page)["taper-schedule-table"]

    # Tsukuba at 60 kg, prednisolone from 2 March 2026, seen on 31 December: every week has
    # come, the last (7 mg from 25 May) is the dose taken now.
    doses = ["36", "36", "31", "27", "23", "20", "17", "15", "13", "11", "9", "8", "7"]
    assert rows == [
        [
            "PSL_TAPER",
            str(week),
            (D(2026, 3, 2) + dt.timedelta(weeks=week)).isoformat(),
            dose,
            "current" if week == 12 else "past",
        ]
        for week, dose in enumerate(doses)
    ]
