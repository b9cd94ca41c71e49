"""The site's day and week of bookings by resource, and the slot picker on the participant's
timeline and in the booking form (scheduler/admin/sitebookings.py).

NIAMS V2 (week 0) booked at 08:45 on Tuesday 3 February 2026 (EST): labs 08:45-09:00, the
scanner 09:00-10:50, CAVI 10:50-11:10, a chair 11:10-12:40.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.urls import reverse
from django.utils import translation

from participants.models import TreatmentAssignment
from scheduler.models import ScheduledVisit, SecurityEvent, UserPreference
from scheduler.services import visit_book
from tests.booking.conftest import niams_calendar
from tests.booking.test_holds import DAY1, enrolled, visit
from tests.conftest import sign_in
from tests.factories import SiteFactory, member
from tests.i18n.test_catalog import marked, untranslated
from trials.models import Arm, ResourceOutOfService, SiteResource

D = dt.date
T = dt.time
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def niams(import_seed) -> Any:
    return import_seed("000")


@pytest.fixture
def coordinator(django_user_model, niams, niams_site) -> Any:
    user = django_user_model.objects.create_user("c", is_staff=True)
    return member(user, trial=niams.trial, site=niams_site)


def page_url(site: Any, **query: str) -> str:
    url = reverse("admin:scheduler_site_bookings", args=[site.pk])
    return f"{url}?{'&'.join(f'{k}={v}' for k, v in query.items())}" if query else url


def lanes(board: Any) -> dict[str, list[tuple[str, list[str]]]]:
    """Each lane's cells: (the day, its blocks as "from–to title")."""
    return {
        lane.name: [(cell.day.isoformat(), [b.text for b in cell.blocks]) for cell in lane.cells]
        for lane in board.lanes
    }


def booked(niams: Any, site: Any, at: dt.time, day1: dt.date = DAY1) -> ScheduledVisit:
    first = visit(enrolled(niams, site, day1), "V2")
    visit_book(visit=first, local_date=day1, local_time=at, by=None)
    return first


def who(v: ScheduledVisit) -> str:
    return f"{v.participant.trial.code} {v.participant.study_id} · V2 – {v.name}"


def test_the_day_view_draws_each_hold_on_its_resource_lane(
    client, niams, niams_site, coordinator
) -> None:
    v2 = booked(niams, niams_site, T(8, 45))
    arm = Arm.objects.get(version=niams, code="ANI")
    TreatmentAssignment.objects.get_or_create(participant=v2.participant, defaults={"arm": arm})
    sign_in(client, coordinator)

    page = client.get(page_url(niams_site, span="day", day="2026-02-03"))

    board = page.context["board"]
    assert (board.span, board.first, board.last, board.axis) == ("day", DAY1, DAY1, "07:00–18:00")
    assert lanes(board) == {
        "CAVI 1": [("2026-02-03", [f"10:50–11:10 {who(v2)} · CAVI"])],
        "Chair 1": [("2026-02-03", [f"11:10–12:40 {who(v2)} · INFUSION"])],
        "Chair 2": [("2026-02-03", [])],
        "Chair 3": [("2026-02-03", [])],
        "Chair 4": [("2026-02-03", [])],
        "PET/CT 1": [("2026-02-03", [f"09:00–10:50 {who(v2)} · FDGPET"])],
    }
    scanner = next(lane for lane in board.lanes if lane.name == "PET/CT 1")
    cell = scanner.cells[0]
    # 09:00 is 2 of the axis's 11 hours in; 110 minutes of 660.
    assert (cell.hours, cell.closed, cell.open_spans) == ("08:00–16:00", "", (("9.09", "72.73"),))
    assert [(b.left, b.width, b.track) for b in cell.blocks] == [("18.18", "16.67", 0)]
    assert scanner.detail == "PET/CT scanner, capacity 1"
    content = page.content.decode()
    assert f"09:00–10:50 {who(v2)} · FDGPET" in content
    # A blinded coordinator: the participant's arm appears nowhere on the page.
    assert (arm.name, arm.name in content) == ("Anifrolumab", False)
    assert "Times are the site's clock (America/New_York); today there is 2026-01-05." in content


def test_the_week_view_shows_holidays_closures_and_out_of_service_periods(
    client, niams, niams_site, coordinator
) -> None:
    scanner = SiteResource.objects.get(site=niams_site, name="PET/CT 1")
    # Wednesday 18 February 13:00-15:00 EST.
    ResourceOutOfService.objects.create(
        resource=scanner,
        start=dt.datetime(2026, 2, 18, 18, tzinfo=dt.UTC),
        end=dt.datetime(2026, 2, 18, 20, tzinfo=dt.UTC),
        reason="detector calibration",
    )
    v2 = booked(niams, niams_site, T(9), D(2026, 2, 17))
    sign_in(client, coordinator)

    page = client.get(page_url(niams_site, span="week", day="2026-02-18"))

    board = page.context["board"]
    assert [(d.day.isoformat(), d.closed) for d in board.days] == [
        ("2026-02-16", "Washington's Birthday"),
        ("2026-02-17", ""),
        ("2026-02-18", ""),
        ("2026-02-19", ""),
        ("2026-02-20", ""),
        ("2026-02-21", "no opening hours"),
        ("2026-02-22", "no opening hours"),
    ]
    assert lanes(board)["PET/CT 1"] == [
        ("2026-02-16", []),
        ("2026-02-17", [f"09:15–11:05 {who(v2)} · FDGPET"]),
        ("2026-02-18", ["13:00–15:00 out of service: detector calibration"]),
        ("2026-02-19", []),
        ("2026-02-20", []),
        ("2026-02-21", []),
        ("2026-02-22", []),
    ]
    scanner_lane = next(lane for lane in board.lanes if lane.name == "PET/CT 1")
    assert [c.hours for c in scanner_lane.cells] == ["", *["08:00–16:00"] * 4, "", ""]
    assert page.context["previous_url"] == page_url(niams_site, span="week", day="2026-02-11")
    assert page.context["next_url"] == page_url(niams_site, span="week", day="2026-02-25")


def test_it_hides_other_sites(client, django_user_model, niams, niams_site) -> None:
    other = niams_calendar(SiteFactory.create(code="other", name="Other Center"))
    user = django_user_model.objects.create_user("o", is_staff=True)
    member(user, trial=niams.trial, site=other)
    sign_in(client, user)

    response = client.get(page_url(niams_site, span="week"))

    assert response.status_code == 404


def test_a_booking_of_a_participant_the_user_does_not_follow_is_only_busy_time(
    client, django_user_model, import_seed, niams, niams_site
) -> None:
    booked(niams, niams_site, T(8, 45))
    tsukuba = import_seed("001")
    user = django_user_model.objects.create_user("t", is_staff=True)
    member(user, trial=tsukuba.trial, site=niams_site)
    sign_in(client, user)

    page = client.get(page_url(niams_site, span="day", day="2026-02-03"))

    assert lanes(page.context["board"])["PET/CT 1"] == [
        ("2026-02-03", ["09:00–10:50 booked (a participant you do not follow)"])
    ]


def test_a_bad_date_is_a_400_naming_the_parameter(client, niams_site, coordinator) -> None:
    sign_in(client, coordinator)

    response = client.get(page_url(niams_site, span="day", day="2026-02-30"))

    assert (response.status_code, response.content.decode()) == (
        400,
        "day: “2026-02-30” is not a date (YYYY-MM-DD)\n",
    )


@pytest.mark.parametrize("bookings", [1, 3])
def test_the_week_view_reads_in_the_same_number_of_queries_whatever_the_bookings(
    client, niams, niams_site, coordinator, django_assert_num_queries, bookings
) -> None:
    # The scanner holds 110 minutes from 15 minutes in: one visit every two hours fits.
    for n in range(bookings):
        booked(niams, niams_site, T(7 + 2 * n, 45))
    sign_in(client, coordinator)
    client.get(page_url(niams_site, span="week", day="2026-02-03"))

    with django_assert_num_queries(QUERIES):
        page = client.get(page_url(niams_site, span="week", day="2026-02-03"))

    assert page.status_code == 200


QUERIES = 17  # with the audit's one INSERT for the participants the board names


def test_the_board_records_a_view_of_each_participant_it_names_and_no_other(
    client, django_user_model, import_seed, niams, niams_site, coordinator
) -> None:
    first = booked(niams, niams_site, T(7, 45))
    second = booked(niams, niams_site, T(9, 45))
    tsukuba = import_seed("001")
    outsider = django_user_model.objects.create_user("t", is_staff=True)
    member(outsider, trial=tsukuba.trial, site=niams_site)

    sign_in(client, outsider)
    assert client.get(page_url(niams_site, span="week", day="2026-02-03")).status_code == 200
    assert not SecurityEvent.objects.filter(kind="view").exists()  # busy time names no one

    sign_in(client, coordinator)
    assert client.get(page_url(niams_site, span="week", day="2026-02-03")).status_code == 200
    detail = {
        "page": "site bookings",
        "site": niams_site.code,
        "first": "2026-02-02",
        "last": "2026-02-08",
    }
    assert list(
        SecurityEvent.objects.filter(kind="view")
        .order_by("participant_id")
        .values_list("username", "participant_id", "surface", "detail")
    ) == [
        ("c", first.participant_id, "admin", detail),
        ("c", second.participant_id, "admin", detail),
    ]


# ----------------------------------------------------------------------------------------
# The slot picker


def test_the_timelines_picker_records_a_view_of_each_other_participant_it_names(
    client, niams, niams_site, coordinator
) -> None:
    other = booked(niams, niams_site, T(7, 45))
    due = visit(enrolled(niams, niams_site), "V2")
    timeline = reverse("admin:participants_participant_timeline", args=[due.participant.pk])

    with time_machine.travel(dt.datetime(2026, 2, 2, 15, tzinfo=dt.UTC), tick=False):
        sign_in(client, coordinator)
        assert client.get(f"{timeline}?pick={due.pk}").status_code == 200

    assert list(
        SecurityEvent.objects.filter(kind="view")
        .order_by("id")
        .values_list("participant_id", "detail")
    ) == [
        (due.participant_id, {"page": "timeline"}),
        (
            other.participant_id,
            {
                "page": "slot picker",
                "site": niams_site.code,
                "first": "2026-02-02",
                "last": "2026-02-08",
            },
        ),
    ]


def test_the_timeline_offers_the_free_starts_of_a_due_visit_in_a_week_with_its_window_shaded(
    client, niams, niams_site, coordinator
) -> None:
    other = booked(niams, niams_site, T(7, 45))
    due = visit(enrolled(niams, niams_site), "V2")
    timeline = reverse("admin:participants_participant_timeline", args=[due.participant.pk])

    # The day before the visit's one-day window: the picker opens on the window's week.
    with time_machine.travel(dt.datetime(2026, 2, 2, 15, tzinfo=dt.UTC), tick=False):
        sign_in(client, coordinator)
        plain = client.get(timeline)
        page = client.get(f"{timeline}?pick={due.pk}")

    # Without ?pick the timeline only links each visit it can book (it reads no calendar).
    assert ("picker" in plain.context, plain.context["picker_choices"]) == (
        False,
        [("V2", f"{timeline}?pick={due.pk}#slot-picker", False)],
    )

    picker = page.context["picker"]
    board = picker.board
    assert (picker.visit, board.first, board.last) == (due, D(2026, 2, 2), D(2026, 2, 8))
    assert [d.day for d in board.days if d.shaded] == [DAY1]
    free = board.lanes[0]
    assert free.key == "free"
    # The scanner is held 08:00-09:50 and the scan starts 15 minutes in; the last start
    # whose scan ends by 16:00 is 14:00 (16:00 − 125 minutes, on the half hour).
    assert [(c.day.isoformat(), [label for label, _d, _t in c.starts]) for c in free.cells] == [
        ("2026-02-02", []),
        ("2026-02-03", ["10:00", "10:30", "11:00", "11:30", "12:00", "12:30", "13:00", "13:30"]),
        ("2026-02-04", []),
        ("2026-02-05", []),
        ("2026-02-06", []),
        ("2026-02-07", []),
        ("2026-02-08", []),
    ]
    assert lanes(board)["PET/CT 1"][1] == ("2026-02-03", [f"08:00–09:50 {who(other)} · FDGPET"])
    assert (page.context["picker_previous_url"], page.context["picker_next_url"]) == (None, None)

    # One click on a start opens the booking's preview with it filled in; "Confirm" books it
    # and comes back to the timeline.
    book = page.context["slot_post"]
    with time_machine.travel(dt.datetime(2026, 2, 2, 15, tzinfo=dt.UTC), tick=False):
        preview = client.post(
            book, {"local_date": "2026-02-03", "local_time": "10:00", "version": due.version}
        )
        done = client.post(
            book,
            {
                "local_date": "2026-02-03",
                "local_time": "10:00",
                "version": due.version,
                "reason": "",
                "_confirm": "1",
            },
        )

    assert preview.context["outcome"][0] == (
        "Booked at the site",
        "Tue 3 Feb 2026 10:00 EST",
        False,
    )
    assert (done.status_code, done["Location"]) == (302, timeline)
    due.refresh_from_db()
    assert (due.status, due.booked_start) == (
        ScheduledVisit.Status.BOOKED,
        dt.datetime(2026, 2, 3, 15, tzinfo=dt.UTC),
    )


def test_the_booking_form_shows_the_week_picker_whose_starts_fill_the_form_in(
    client, niams, niams_site, coordinator
) -> None:
    booked(niams, niams_site, T(7, 45))
    due = visit(enrolled(niams, niams_site), "V2")
    sign_in(client, coordinator)
    url = reverse("admin:scheduler_scheduledvisit_book", args=[due.pk])

    page = client.get(url)
    picked = client.get(f"{url}?local_date=2026-02-03&local_time=10:30")

    free = page.context["picker"].board.lanes[0]
    assert [label for label, _d, _t in free.cells[1].starts][:2] == ["10:00", "10:30"]
    assert (
        '<a class="slot button" href="?local_date=2026-02-03&amp;local_time=10:30" '
        'title="2026-02-03 10:30 America/New_York">10:30</a>'
    ) in page.content.decode()
    form = picked.context["form"]
    assert (str(form["local_date"].value()), str(form["local_time"].value())) == (
        "2026-02-03",
        "10:30",
    )


def test_the_booking_forms_picker_names_no_one(client, niams, niams_site, coordinator) -> None:
    booked(niams, niams_site, T(7, 45))
    due = visit(enrolled(niams, niams_site), "V2")
    sign_in(client, coordinator)

    page = client.get(reverse("admin:scheduler_scheduledvisit_book", args=[due.pk]))

    assert lanes(page.context["picker"].board)["PET/CT 1"][1] == (
        "2026-02-03",
        ["08:00–09:50 booked"],
    )


@pytest.mark.parametrize(
    "path",
    [
        "scheduler/templates/admin/sitebookings/board.html",
        "scheduler/templates/admin/sitebookings/picker.html",
        "scheduler/templates/admin/sitebookings/site.html",
    ],
)
def test_every_text_of_the_site_views_has_its_japanese(path: str) -> None:
    assert untranslated(marked(path)) == []


def test_the_week_view_reads_in_japanese(client, niams, niams_site, coordinator) -> None:
    UserPreference.objects.create(user=coordinator, language="ja")
    booked(niams, niams_site, T(8, 45))
    sign_in(client, coordinator)

    try:
        page = client.get(page_url(niams_site, span="week", day="2026-02-16"))
    finally:
        # The test client runs the request in this thread: Japanese would stay active.
        translation.deactivate()

    board = page.context["board"]
    scanner = next(lane for lane in board.lanes if lane.name == "PET/CT 1")
    assert (page.context["title"], scanner.detail, board.days[0].closed) == (
        "NIH Clinical Center：2026-02-16の週の予約",
        "PET/CT scanner、定員1",
        "Washington's Birthday",  # a US holiday keeps its English name
    )
    assert "時刻は施設の時計（America/New_York）です。施設の今日は2026-01-05です。" in (
        page.content.decode()
    )
