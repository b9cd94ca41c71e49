"""Bad input to every form and API field is refused with a message, never a 500.

Dates are taken from 1900-01-01 to 2200-12-31 everywhere (the admin's forms, the enrollment
forms, the API, protocol files); a birth date is not in the future (today where it is latest,
UTC+14) and at most 130 years back; a weight is 1 to 400 kg; a reason at most 2,000 characters.
The engine's date arithmetic refuses a date it cannot hold (DateOutOfRange, a PlanningError)
for any caller that skips the forms.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine

from participants.forms import EnrollmentCheckForm, ParticipantRegisterForm
from scheduler.engine import PlanningError
from scheduler.engine.localtime import local_to_utc
from scheduler.forms import (
    AnchorChangeForm,
    ParticipantWithdrawForm,
    UnscheduledVisitForm,
    VisitBookForm,
    VisitRecordDoneForm,
)
from scheduler.models import ScheduledVisit
from scheduler.services import CalendarError, participant_anchor_change_preview
from tests.api import conftest as api_fixtures
from tests.review_summary import record
from tests.scheduler import test_admin_views as admin_views
from trials.models import Anchor, TrialSite

pytestmark = pytest.mark.django_db
# The admin's and the API's fixtures: an enrolled NIAMS participant, the API's world of roles.
niams = admin_views.niams
admin_coordinates_every_site = admin_views.admin_coordinates_every_site
frozen_clock = admin_views.frozen_clock
world = api_fixtures.world
# Throttle counts live in the cache, which outlives each test's database.
fresh_throttle_counts = api_fixtures.fresh_throttle_counts
action_url = admin_views.action_url
NOW = dt.datetime(2026, 12, 31, 12, 0, tzinfo=dt.UTC)

BAD_DATES = {
    "0001-01-01": "Enter a date on or after 1900-01-01.",
    "1899-12-31": "Enter a date on or after 1900-01-01.",
    "2201-01-01": "Enter a date on or before 2200-12-31.",
    "9999-12-31": "Enter a date on or before 2200-12-31.",
    "2023-02-30": "Enter a valid date.",
    "0000-01-01": "Enter a valid date.",
    "10000-01-01": "Enter a valid date.",
    "-1-01-01": "Enter a valid date.",
    "": "This field is required.",
}
DATE_FORMS: dict[str, tuple[type[Any], str, dict[str, Any]]] = {
    "book": (VisitBookForm, "local_date", {"local_time": "10:00", "version": "1"}),
    "record done": (VisitRecordDoneForm, "actual_date", {"version": "1"}),
    "anchor change": (AnchorChangeForm, "new_date", {"reason": "why"}),
    "unscheduled visit": (UnscheduledVisitForm, "local_date", {"reason": "flare"}),
    "withdraw": (ParticipantWithdrawForm, "on", {"reason": "moved"}),
}


def tried(kind: str, refused: bool) -> None:
    record(f"bad inputs tried: {kind}")
    if refused:
        record(f"bad inputs refused: {kind}")


@pytest.mark.parametrize("form_name", list(DATE_FORMS))
@pytest.mark.parametrize("value", list(BAD_DATES))
def test_a_form_date_outside_its_range_is_refused_with_a_message(
    form_name: str, value: str
) -> None:
    form_class, field, rest = DATE_FORMS[form_name]

    form = form_class({field: value, **rest})

    tried("forms", not form.is_valid())
    assert form.errors.get(field) == [BAD_DATES[value]]


@pytest.mark.parametrize("value", ["1900-01-01", "2200-12-31"])
def test_a_form_date_at_either_end_of_the_range_is_taken(value: str) -> None:
    form = ParticipantWithdrawForm({"on": value, "reason": "moved"})

    assert form.is_valid(), form.errors


def test_a_reason_longer_than_2000_characters_is_refused() -> None:
    form = ParticipantWithdrawForm({"on": "2026-01-05", "reason": "x" * 2001})

    tried("forms", not form.is_valid())
    assert form.errors["reason"] == ["Ensure this value has at most 2000 characters (it has 2001)."]


def test_a_taper_week_past_104_is_refused() -> None:
    from scheduler.forms import TaperDecisionForm

    form = TaperDecisionForm({"milestone_code": "", "week": "10000000000000", "reason": "r"})

    tried("forms", not form.is_valid())
    assert form.errors["week"] == ["Ensure this value is less than or equal to 104."]


ENROLLMENT_BAD: dict[tuple[str, str], str | list[str]] = {
    ("birth_date", "2027-01-02"): "A birth date cannot be in the future (today is 2027-01-01 "
    "at the latest).",
    ("birth_date", "1896-12-31"): "Enter a date on or after 1900-01-01.",
    ("birth_date", "9999-12-31"): "Enter a date on or before 2200-12-31.",
    ("birth_date", "0001-01-01"): "Enter a date on or after 1900-01-01.",
    ("weight_kg", "0.5"): "Ensure this value is greater than or equal to 1.",
    ("weight_kg", "400.1"): "Ensure this value is less than or equal to 400.",
    ("weight_kg", "99999"): [
        "Ensure this value is less than or equal to 400.",
        "Ensure that there are no more than 4 digits before the decimal point.",
    ],
    ("weight_kg", "1e400"): [
        "Ensure this value is less than or equal to 400.",
        "Ensure that there are no more than 5 digits in total.",
    ],
    ("weight_kg", "NaN"): "Enter a number.",
    ("weight_kg", "-Infinity"): "Enter a number.",
}


@pytest.mark.parametrize(("field", "value"), list(ENROLLMENT_BAD), ids=str)
def test_an_enrollment_detail_outside_its_plausible_range_is_refused(
    field: str, value: str
) -> None:
    data = {"birth_date": "1980-06-15", "weight_kg": "60", field: value}

    with time_machine.travel(NOW, tick=False):
        form = EnrollmentCheckForm(data)
        refused = not form.is_valid()

    tried("forms", refused)
    expected = ENROLLMENT_BAD[(field, value)]
    assert form.errors == {field: expected if isinstance(expected, list) else [expected]}


def test_a_birth_date_more_than_130_years_back_is_refused() -> None:
    with time_machine.travel(dt.datetime(2040, 5, 17, tzinfo=dt.UTC), tick=False):
        form = EnrollmentCheckForm({"birth_date": "1909-12-31", "weight_kg": ""})
        refused = not form.is_valid()

    tried("forms", refused)
    assert form.errors == {
        "birth_date": [
            "A birth date before 1910-05-01 (130 years ago) is not plausible; check the year."
        ]
    }


def test_a_birth_date_of_today_anywhere_is_taken() -> None:
    # 12:00 UTC on 31 December: already 1 January 2027 in Kiribati (UTC+14).
    with time_machine.travel(NOW, tick=False):
        form = EnrollmentCheckForm({"birth_date": "2027-01-01", "weight_kg": ""})
        assert form.is_valid(), form.errors


def test_the_registration_form_bounds_its_texts_and_dates(niams) -> None:
    trial_site = TrialSite.objects.get(trial=niams.trial, site=niams.site)
    data = {
        "trial_site": str(trial_site.pk),
        "study_id": "S" * 41,
        "birth_date": "2999-01-01",
        "email": "a" * 250 + "@example.org",
        "phone": "1" * 41,
        "guardian_name": "g" * 201,
        "language": "en",
        "anchor_day1": "9999-01-01",
    }

    with time_machine.travel(NOW, tick=False):
        form = ParticipantRegisterForm(
            data,
            trial_site=trial_site,
            anchors=Anchor.objects.filter(version=niams.protocol_version),
        )
        refused = not form.is_valid()

    tried("forms", refused)
    assert form.errors == {
        "study_id": ["Ensure this value has at most 40 characters (it has 41)."],
        "birth_date": ["Enter a date on or before 2200-12-31."],
        "email": ["Ensure this value has at most 254 characters (it has 262)."],
        "phone": ["Ensure this value has at most 40 characters (it has 41)."],
        "guardian_name": ["Ensure this value has at most 200 characters (it has 201)."],
        "anchor_day1": ["Enter a date on or before 2200-12-31."],
    }


# ----------------------------------------------------------------------------------------
# Through the admin: the forms above on their pages, no 5xx whatever is posted.

ADMIN_POSTS: list[tuple[str, str, dict[str, str]]] = [
    ("anchor", "participant", {"code": "day1", "reason": "r"}),
    ("unscheduled_visit", "participant", {"reason": "flare"}),
    ("withdraw", "participant", {"reason": "moved"}),
    ("book", "visit", {"local_time": "10:00", "version": "1"}),
    ("record_done", "visit", {"version": "1"}),
]
DATE_FIELD = {
    "anchor": "new_date",
    "unscheduled_visit": "local_date",
    "withdraw": "on",
    "book": "local_date",
    "record_done": "actual_date",
}


@pytest.mark.parametrize(("action", "on", "rest"), ADMIN_POSTS, ids=[a for a, _, _ in ADMIN_POSTS])
def test_admin_actions_refuse_extreme_dates_on_the_form_without_a_5xx(
    admin_client, niams, action: str, on: str, rest: dict[str, str]
) -> None:
    record_ = niams if on == "participant" else ScheduledVisit.objects.filter(participant=niams)[0]
    field = DATE_FIELD[action]
    statuses = []
    for value in ("0001-01-01", "9999-12-31", "2023-02-30", "99999-01-01", "x" * 5000):
        for submit in ({}, {"_confirm": "yes"}):
            response = admin_client.post(
                action_url(record_, action), {**rest, field: value, **submit}
            )
            record("5xx responses", int(response.status_code >= 500))
            tried("forms", response.status_code == 200 and field in response.context["form"].errors)
            statuses.append(response.status_code)

    assert statuses == [200] * 10


# ----------------------------------------------------------------------------------------
# Services and the engine: an extreme date from a caller that skipped the forms.


def test_an_anchor_change_to_year_9999_is_refused_by_the_service(niams) -> None:
    with pytest.raises(CalendarError) as caught:
        participant_anchor_change_preview(
            participant=niams, code="day1", new_date=dt.date(9999, 12, 31)
        )

    tried("services", True)
    assert str(caught.value) == (
        "a date falls outside the calendar (years 1 to 9999): check the dates given"
    )


def test_an_anchor_change_to_year_1_is_refused_by_the_service(niams) -> None:
    with pytest.raises(CalendarError) as caught:
        participant_anchor_change_preview(participant=niams, code="day1", new_date=dt.date(1, 1, 1))

    tried("services", True)
    assert str(caught.value) == (
        "a date falls outside the calendar (years 1 to 9999): check the dates given"
    )


def test_local_time_at_the_end_of_the_calendar_is_a_planning_error() -> None:
    with pytest.raises(PlanningError) as caught:
        local_to_utc(dt.date(1, 1, 1), dt.time(0, 0), "Asia/Tokyo")

    assert caught.value.problems == [
        "a date falls outside the calendar (years 1 to 9999): check the dates given"
    ]


# ----------------------------------------------------------------------------------------
# The API: every input refused with a 400 and the field's message.


def test_the_api_refuses_extreme_and_implausible_values_with_400(world) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    visit = world.visit("BERLIN-001")
    register = {
        "trial": world.trial.code,
        "site": world.berlin.code,
        "study_id": "NEW-1",
        "birth_date": "1980-01-01",
    }
    bad_requests: list[tuple[str, dict[str, Any], str, list[str]]] = [
        (
            "/api/v1/participants/",
            {**register, "birth_date": "9999-12-31"},
            "birth_date",
            ["must be on or before 2200-12-31"],
        ),
        (
            "/api/v1/participants/",
            {**register, "birth_date": "0001-01-01"},
            "birth_date",
            ["must be on or after 1900-01-01"],
        ),
        (
            "/api/v1/participants/",
            {**register, "birth_date": "2023-02-30"},
            "birth_date",
            ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."],
        ),
        (
            "/api/v1/participants/",
            {**register, "weight_kg": "99999"},
            "weight_kg",
            ["Ensure that there are no more than 4 digits before the decimal point."],
        ),
        (
            "/api/v1/participants/",
            {**register, "study_id": "S" * 41},
            "study_id",
            ["Ensure this field has no more than 40 characters."],
        ),
        (
            "/api/v1/participants/",
            {**register, "anchors": {"day1": "9999-01-01"}},
            "anchors.day1",
            ["must be on or before 2200-12-31"],
        ),
        (
            f"/api/v1/visits/{visit.pk}/book/",
            {"local_date": "9999-12-31", "local_time": "10:00"},
            "local_date",
            ["must be on or before 2200-12-31"],
        ),
        (
            f"/api/v1/visits/{visit.pk}/book/",
            {"local_date": "2026-03-02", "local_time": "25:00"},
            "local_time",
            ["Time has wrong format. Use one of these formats instead: hh:mm[:ss[.uuuuuu]]."],
        ),
        (
            f"/api/v1/participants/{participant.pk}/withdraw/",
            {"on": "0001-01-01", "reason": "r"},
            "on",
            ["must be on or after 1900-01-01"],
        ),
        (
            f"/api/v1/participants/{participant.pk}/withdraw/",
            {"on": "2026-01-05", "reason": "x" * 2001},
            "reason",
            ["Ensure this field has no more than 2000 characters."],
        ),
    ]
    seen = []
    for number, (url, body, field, _messages) in enumerate(bad_requests):
        etag = client.get(url.split("book/")[0].split("withdraw/")[0]).get("ETag")
        headers = {"HTTP_IDEMPOTENCY_KEY": f"bad-{number}"}
        if etag:
            headers["HTTP_IF_MATCH"] = etag
        response = client.post(url, body, format="json", **headers)
        record("5xx responses", int(response.status_code >= 500))
        tried("API", response.status_code == 400)
        problems = response.json()["errors"]
        seen.append((response.status_code, [p["message"] for p in problems if p["field"] == field]))
    assert seen == [(400, messages) for _, _, _, messages in bad_requests]


# A reason is the coordinator's own words, up to 2,000 characters, stored whole in the record
# and in its history (a text column: SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD), on
# Postgres as on SQLite.
def test_a_long_reason_is_stored_whole(admin_client, niams) -> None:
    reason = ("The participant moved abroad for work; " * 10).strip()
    posted = {"on": "2026-12-30", "reason": reason, "_confirm": "yes"}

    response = admin_client.post(action_url(niams, "withdraw"), posted)

    record("5xx responses", int(response.status_code >= 500))
    assert response.status_code == 302
    niams.refresh_from_db()
    assert niams.ended_reason == reason
    assert niams.history.latest().history_change_reason == reason


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("birth_date", "2100-01-01", "A birth date cannot be in the future (today is "),
        ("weight_kg", "400.1", "Ensure this value is less than or equal to 400."),
    ],
)
def test_the_api_refuses_a_future_birth_date_and_an_implausible_weight(
    world, field: str, value: str, message: str
) -> None:
    register = {
        "trial": world.trial.code,
        "site": world.berlin.code,
        "study_id": "NEW-2",
        "birth_date": "1980-01-01",
        field: value,
    }
    response = world.client("coordinator").post(
        "/api/v1/participants/", register, format="json", HTTP_IDEMPOTENCY_KEY=f"bad-{field}"
    )
    tried("API", response.status_code == 400)
    record("5xx responses", int(response.status_code >= 500))
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert errors[0]["message"].startswith(message)
