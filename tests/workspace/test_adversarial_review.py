"""Adversarial review of the coordinator's workspace (start page, lists, export, actions).

Tests marked xfail(strict=True) reproduce a defect found in the review; the others pin down
behaviour checked and found correct that no other test covered (the world:
tests/workspace/conftest.py)."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from scheduler.models import Reminder, ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for
from tests.workspace.conftest import World, at, niams_participant, staff, visit

pytestmark = pytest.mark.django_db
D = dt.date
VISITS = reverse("admin:scheduler_scheduledvisit_changelist")
EXPORT = reverse("admin:scheduler_scheduledvisit_export")
PARTICIPANTS = reverse("admin:participants_participant_changelist")
REMINDERS = reverse("admin:scheduler_reminder_changelist")
FEEDS = reverse("admin:scheduler_calendarfeed_changelist")
SCREENING_LOG = reverse("admin:participants_participant_screening_log")


@pytest.fixture
def logged_in(client: Any, coordinator: Any, now: None) -> Any:
    sign_in(client, coordinator)
    client.raise_request_exception = False  # a 500 is a status to assert, not a crash
    return client


def exported(client: Any, query: str = "") -> list[list[str]]:
    response = client.get(f"{EXPORT}?{query}")
    assert response.status_code == 200
    raw = b"".join(response.streaming_content)
    assert raw.startswith(codecs.BOM_UTF8)  # for Excel: see visit_csv_rows
    text = raw.decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))


# ----------------------------------------------------------------------------------------
# Malformed query strings and form values: never a 500.


def nul_refusal(name: str) -> tuple[int, str, str]:
    """The status, content type and body of scheduler.middleware's answer off the API."""
    return 400, "text/plain; charset=utf-8", f'parameter "{name}" contains a NUL character\n'


def answer(response: Any) -> tuple[int, str, str]:
    return response.status_code, response["Content-Type"], response.content.decode()


# A NUL reached Postgres (DataError: a 500) through Django's own choices filter, the list
# filters of lists.py, the screening log and the security audit: every one is refused before
# any view reads it (scheduler.middleware.NulParameterMiddleware).
@pytest.mark.parametrize(
    ("url", "name"),
    [
        (f"{VISITS}?status__exact=%00", "status__exact"),  # Django's own choices filter
        (f"{VISITS}?procedure=%00", "procedure"),  # lists.ProcedureFilter
        (f"{VISITS}?resource=a%00b", "resource"),  # lists.ResourceFilter
        (f"{VISITS}?q=P-00%00", "q"),  # the search box
        (f"{REMINDERS}?channel__exact=%00", "channel__exact"),
        (f"{SCREENING_LOG}?trial=%00", "trial"),
        (f"{SCREENING_LOG}?site=%00", "site"),
        (reverse("admin:scheduler_securityevent_changelist") + "?username=%00", "username"),
        (f"{VISITS}?sta%00tus=x", "sta\\x00tus"),  # in a name: shown, not sent raw
    ],
)
def test_a_nul_byte_in_a_query_parameter_is_a_400_naming_it(
    world: World, logged_in: Any, url: str, name: str
) -> None:
    assert answer(logged_in.get(url)) == nul_refusal(name)


@pytest.mark.parametrize(
    ("field", "value"),
    [("local_date", "2026-03-12\x00"), ("version", "1\x00"), ("reason", "a\x00b")],
)
def test_a_nul_byte_in_a_form_value_is_a_400_naming_it_and_writes_nothing(
    world: World, logged_in: Any, field: str, value: str
) -> None:
    v = world.v(world.p4, "V1")
    data = {"version": v.version, "local_date": "2026-03-12", "local_time": "10:00"}
    response = logged_in.post(
        reverse("admin:scheduler_scheduledvisit_book", args=[v.pk]),
        {**data, "reason": "moved", field: value, "_confirm": "1"},
    )
    multipart = logged_in.post(
        REMINDERS, {"action": "retry\x00", "index": "0", "_selected_action": "1"}
    )
    urlencoded = logged_in.post(
        REMINDERS,
        "action=retry&index=0&_selected_action=1%00",
        content_type="application/x-www-form-urlencoded",
    )
    assert answer(response) == nul_refusal(field)
    assert answer(multipart) == nul_refusal("action")
    assert answer(urlencoded) == nul_refusal("_selected_action")
    assert ScheduledVisit.objects.get(pk=v.pk).version == v.version


def test_a_nul_byte_under_the_api_is_a_problem_document_naming_it(
    world: World, logged_in: Any
) -> None:
    # The OAuth token endpoint takes a form and looked the client id up as sent: a 500.
    token = logged_in.post(
        "/api/v1/oauth/token/",
        {"grant_type": "client_credentials", "client_id": "\x00", "client_secret": "x"},
    )
    listed = logged_in.get("/api/v1/visits/?site=a%00b")
    for response, name in ((token, "client_id"), (listed, "site")):
        assert (response.status_code, response["Content-Type"]) == (
            400,
            "application/problem+json",
        )
        assert response.json() == {
            "type": "/api/v1/problems/invalid-input",
            "title": "Invalid input",
            "status": 400,
            "detail": f'parameter "{name}" contains a NUL character',
            "errors": [{"field": name, "message": "Null characters are not allowed."}],
        }


def test_an_escaped_percent_and_a_json_nul_are_not_refused_by_the_middleware(
    world: World, logged_in: Any
) -> None:
    # "%2500" is the text "%00", not a NUL: an ordinary search that finds nothing.
    searched = logged_in.get(f"{VISITS}?q=%2500")
    # A NUL inside a JSON body is left to the API's serializers (the body is not read).
    booked = logged_in.post(
        f"/api/v1/visits/{world.v(world.p4, 'V1').pk}/book/",
        '{"reason": "a\\u0000b"}',
        content_type="application/json",
    )
    assert (searched.status_code, searched.context["cl"].result_count) == (200, 0)
    assert booked.status_code == 400
    assert "NUL character" not in booked.json()["detail"]


@pytest.mark.parametrize("site", ["abc", "%C2%B2", "1.0", "-1"])
def test_a_non_numeric_site_in_the_feed_list_filter_is_a_message_not_a_500(
    world: World, logged_in: Any, site: str
) -> None:
    response = logged_in.get(f"{FEEDS}?site={site}")
    assert (response.status_code, response.get("Location")) == (302, f"{FEEDS}?e=1")


def test_a_huge_site_id_in_the_feed_list_filter_matches_nothing(
    world: World, logged_in: Any
) -> None:
    response = logged_in.get(f"{FEEDS}?site={'9' * 30}")
    assert (response.status_code, response.context["cl"].result_count) == (200, 0)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("day=9999-12-31", "day: Enter a date on or before 2200-12-31."),
        ("day=2201-01-01", "day: Enter a date on or before 2200-12-31."),
        ("day=0001-01-01", "day: Enter a date on or after 1900-01-01."),
        ("day=1899-12-31", "day: Enter a date on or after 1900-01-01."),
        ("day=abc", "day: “abc” is not a date (YYYY-MM-DD)"),
        ("week=2026-02-30", "week: “2026-02-30” is not a date (YYYY-MM-DD)"),
    ],
)
def test_a_site_bookings_day_outside_the_calendar_is_a_400_naming_the_field(
    world: World, logged_in: Any, query: str, message: str
) -> None:
    url = reverse("admin:scheduler_site_bookings", args=[world.ny.pk])
    response = logged_in.get(f"{url}?span=day&{query}")
    assert answer(response) == (400, "text/plain; charset=utf-8", f"{message}\n")


@pytest.mark.parametrize("day", ["1900-01-01", "2200-12-31"])
def test_site_bookings_show_the_first_and_last_day_a_protocol_may_name(
    world: World, logged_in: Any, day: str
) -> None:
    url = reverse("admin:scheduler_site_bookings", args=[world.ny.pk])
    assert logged_in.get(f"{url}?span=week&day={day}").status_code == 200


@pytest.mark.parametrize("selected", ["abc", "%C2%B2", " 1", "1_0", "9" * 30])
def test_a_non_numeric_selected_reminder_is_answered_like_an_unknown_one(
    world: World, logged_in: Any, selected: str
) -> None:
    def retry(selected: str) -> Any:
        return logged_in.post(
            REMINDERS, {"action": "retry", "index": "0", "_selected_action": selected}
        )

    unknown = retry("99999999")
    malformed = retry(selected.replace("%C2%B2", "²"))
    assert (malformed.status_code, malformed["Location"]) == (unknown.status_code, REMINDERS)
    assert Reminder.objects.get(pk=world.dead_email.pk).status == Reminder.Status.DEAD


def test_a_malformed_id_beside_a_real_one_leaves_the_real_one_acted_on(
    world: World, logged_in: Any
) -> None:
    response = logged_in.post(
        REMINDERS,
        {
            "action": "retry",
            "index": "0",
            "_selected_action": ["abc", str(world.dead_email.pk)],
        },
    )
    assert (response.status_code, response["Location"]) == (302, REMINDERS)
    assert Reminder.objects.get(pk=world.dead_email.pk).status != Reminder.Status.DEAD


@pytest.mark.parametrize("participant_id", ["%C2%B2", "%D9%A1", "9" * 30])
def test_a_non_ascii_digit_in_the_security_audit_participant_filter_is_not_a_500(
    world: World, admin_client: Any, now: None, participant_id: str
) -> None:
    admin_client.raise_request_exception = False
    response = admin_client.get(
        reverse("admin:scheduler_securityevent_changelist") + f"?participant_id={participant_id}"
    )
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("local_date", "0000-01-01", "Enter a valid date."),
        ("local_date", "10000-01-01", "Enter a valid date."),
        ("local_time", "25:00", "Enter a valid time."),
        # A NUL in any field never reaches the form: it is the middleware's 400 (see
        # test_a_nul_byte_in_a_form_value_is_a_400_naming_it_and_writes_nothing).
    ],
)
def test_the_booking_form_names_the_field_of_a_malformed_value(
    world: World, logged_in: Any, field: str, value: str, error: str
) -> None:
    v = world.v(world.p4, "V1")
    data = {"version": v.version, "local_date": "2026-03-13", "local_time": "09:30"}
    data[field] = value
    response = logged_in.post(
        reverse("admin:scheduler_scheduledvisit_book", args=[v.pk]), {**data, "_confirm": "1"}
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {field: [error]}
    assert ScheduledVisit.objects.get(pk=v.pk).version == v.version


def test_a_huge_version_is_a_conflict_and_writes_nothing(world: World, logged_in: Any) -> None:
    v = world.v(world.p4, "V1")
    response = logged_in.post(
        reverse("admin:scheduler_scheduledvisit_book", args=[v.pk]),
        {
            "version": "99999999999999999999",
            "local_date": "2026-03-12",
            "local_time": "10:00",
            "reason": "moved",
            "_confirm": "1",
        },
    )
    assert response.status_code == 200
    assert "changed by someone else" in str(response.context["form"].non_field_errors())
    after = ScheduledVisit.objects.get(pk=v.pk)
    assert (after.version, after.booked_date) == (v.version, D(2026, 3, 13))


# ----------------------------------------------------------------------------------------
# Another trial at the same site: an unknown id everywhere, nothing written.


def test_another_trials_participant_at_the_same_site_is_an_unknown_id(
    world: World, logged_in: Any
) -> None:
    with at(D(2026, 1, 4)):
        x = participant_for(
            world.tsukuba_version,
            anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
            weight_kg=Decimal(60),
            site=world.ny,  # the coordinator's own site, another trial
            study_id="X-001",
        )
        participant_enroll(participant=x, on=D(2026, 3, 1))
    xv = visit(x, "INF", 1)
    missing = 99_999_999
    pages = [
        ("admin:participants_participant_change", x.pk),
        ("admin:participants_participant_timeline", x.pk),
        ("admin:participants_participant_enroll", x.pk),
        ("admin:participants_participant_taper", x.pk),
        ("admin:participants_participant_history", x.pk),
        ("admin:participants_participant_emergency_unblind", x.pk),
        ("admin:scheduler_calendarfeed_participant", x.pk),
        ("admin:scheduler_scheduledvisit_change", xv.pk),
        ("admin:scheduler_scheduledvisit_book", xv.pk),
        ("admin:scheduler_scheduledvisit_history", xv.pk),
    ]
    for name, pk in pages:
        theirs = logged_in.get(reverse(name, args=[pk]))
        unknown = logged_in.get(reverse(name, args=[missing]))
        assert (theirs.status_code, theirs.content) == (404, unknown.content), name

    booked = logged_in.post(
        reverse("admin:scheduler_scheduledvisit_book", args=[xv.pk]),
        {"version": xv.version, "local_date": "2026-03-12", "local_time": "10:00", "_confirm": "1"},
    )
    reminder = Reminder.objects.filter(participant=x).order_by("id")[0]
    Reminder.objects.filter(pk=reminder.pk).update(status=Reminder.Status.DEAD)
    retried = logged_in.post(
        REMINDERS, {"action": "retry", "index": "0", "_selected_action": str(reminder.pk)}
    )
    assert booked.status_code == 404
    assert ScheduledVisit.objects.get(pk=xv.pk).version == xv.version
    assert (retried.status_code, retried["Location"]) == (302, REMINDERS)
    assert Reminder.objects.get(pk=reminder.pk).status == Reminder.Status.DEAD
    # Nor in a list, a search, the start page or the export.
    assert logged_in.get(f"{VISITS}?q=X-001").context["cl"].result_count == 0
    assert b"X-001" not in logged_in.get(reverse("admin:index")).content
    assert "X-001" not in {row[2] for row in exported(logged_in)}


# ----------------------------------------------------------------------------------------
# Blinding, CSRF, formula injection, site-local dates at the ends of the world.


@pytest.mark.parametrize(
    ("url", "back_to"),
    [
        (f"{VISITS}?participant__treatmentassignment__arm__code=ANI", f"{VISITS}?e=1"),
        (f"{PARTICIPANTS}?treatmentassignment__arm__code=ANI", f"{PARTICIPANTS}?e=1"),
        (f"{EXPORT}?participant__treatmentassignment__arm__code=ANI", VISITS),
    ],
)
def test_a_blinded_role_cannot_count_an_arm_through_a_list_filter(
    world: World, logged_in: Any, url: str, back_to: str
) -> None:
    response = logged_in.get(url)
    assert (response.status_code, response["Location"]) == (302, back_to)


def test_state_changing_forms_refuse_a_post_without_a_csrf_token(
    world: World, coordinator: Any, now: None
) -> None:
    client = Client(enforce_csrf_checks=True)
    sign_in(client, coordinator)
    v = world.v(world.p4, "V1")
    posts = [
        (
            reverse("admin:scheduler_scheduledvisit_book", args=[v.pk]),
            {
                "version": v.version,
                "local_date": "2026-03-12",
                "local_time": "10:00",
                "reason": "moved",
                "_confirm": "1",
            },
        ),
        (
            REMINDERS,
            {"action": "retry", "index": "0", "_selected_action": str(world.dead_email.pk)},
        ),
        (reverse("admin:scheduler_calendarfeed_participant", args=[world.p4.pk]), {"_create": "1"}),
        (reverse("admin:participants_participant_enroll", args=[world.p4.pk]), {}),
        (reverse("language-switch"), {"language": "ja"}),
    ]
    assert [client.post(url, data).status_code for url, data in posts] == [403] * len(posts)
    assert ScheduledVisit.objects.get(pk=v.pk).version == v.version
    assert Reminder.objects.get(pk=world.dead_email.pk).status == Reminder.Status.DEAD


def test_formula_looking_study_ids_are_neutralised_in_the_export(
    world: World, logged_in: Any
) -> None:
    # (A tab or CR before an id is stripped at registration: such ids no longer exist.)
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-1+1", "@SUM(A1)", "=1", "=2", "-12"]
    with at(D(2026, 1, 4)):
        for study_id in hostile:
            niams_participant(world.niams, world.ny, study_id, D(2026, 3, 31), "ANI")
    cells = {row[2] for row in exported(logged_in) if row[3] == "V1"}
    assert cells >= {
        '\'=HYPERLINK("http://x")',
        "'+1+1",
        "'-1+1",
        "'@SUM(A1)",
        "'=1",
        "'=2",
        "-12",  # a plain number stays a number
    }
    assert not {c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")}


def test_sites_at_utc_plus_14_and_minus_11_each_see_their_own_today(
    world: World, builder: Any, client: Any
) -> None:
    with at(D(2026, 1, 4)):
        kiri = SiteFactory.create(code="kiri", name="A Kiritimati", timezone="Pacific/Kiritimati")
        pago = SiteFactory.create(code="pago", name="B Pago Pago", timezone="Pacific/Pago_Pago")
        k1 = niams_participant(world.niams, kiri, "K-001", D(2026, 3, 31), "ANI")
        g1 = niams_participant(world.niams, pago, "G-001", D(2026, 3, 31), "PBO")
    with at(D(2026, 3, 1)):
        visit_book(
            visit=visit(k1, "V1"), local_date=D(2026, 3, 11), local_time=dt.time(0, 45), by=builder
        )
        visit_book(
            visit=visit(g1, "V1"), local_date=D(2026, 3, 9), local_time=dt.time(23, 45), by=builder
        )
    user = staff("pacific", trial=world.niams.trial, site=kiri)
    member(user, trial=world.niams.trial, site=pago)
    sign_in(client, user)
    # 10:30 UTC on 10 March: already 00:30 on the 11th at Kiritimati, still 23:30 on the 9th
    # at Pago Pago. Each booked visit is its own site's "today".
    with time_machine.travel(dt.datetime(2026, 3, 10, 10, 30, tzinfo=dt.UTC), tick=False):
        blocks = client.get(reverse("admin:index")).context["site_blocks"]
        listed = client.get(f"{VISITS}?booked=today").context["cl"].result_list
        rows = exported(client, "booked=today")[1:]
        done_form = client.get(
            reverse("admin:scheduler_scheduledvisit_record_done", args=[visit(k1, "V1").pk])
        ).context["form"]

    seen = [
        (
            b["site"].code,
            b["today"],
            b["clock"],
            [(r.who.label, r.when) for s in b["sections"] if s.key == "today" for r in s.rows],
        )
        for b in blocks
    ]
    assert seen == [
        (
            "kiri",
            D(2026, 3, 11),
            "Wed 11 Mar 2026 00:30 +14",
            [("K-001", "Wed 11 Mar 2026 00:45 +14")],
        ),
        (
            "pago",
            D(2026, 3, 9),
            "Mon 9 Mar 2026 23:30 SST",
            [("G-001", "Mon 9 Mar 2026 23:45 SST")],
        ),
    ]
    assert sorted(v.participant.study_id for v in listed) == ["G-001", "K-001"]
    assert sorted((r[2], r[9], r[10]) for r in rows) == [
        ("G-001", "Mon 9 Mar 2026 23:45 SST", "2026-03-09"),
        ("K-001", "Wed 11 Mar 2026 00:45 +14", "2026-03-11"),
    ]
    # Recording it done defaults to Kiritimati's today, not the server's (UTC) 10 March.
    assert done_form.initial["actual_date"] == D(2026, 3, 11)
