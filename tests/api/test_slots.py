"""The slots endpoint and booking by slot, on the NIAMS seed at an NIH site with one PET/CT
scanner (08:00-16:00 EST), four infusion chairs and a CAVI device, and on the Tsukuba seed
at a Japanese site closed on Japanese public holidays.

NIAMS V2 (week 0) is Day 1 itself (a one-day window): LABS 0-15, FDGPET 15-125 on the
scanner, CAVI 125-145, INFUSION 145-235 in a chair. The clinic opens 07:30-17:30 and starts
are on its 15-minute grid, so the scanner takes three V2 visits a day: 07:45, 09:45, 11:45
(a 13:45 start would end at 17:40).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler.models import BookingHold, Membership, ScheduledVisit
from scheduler.services import participant_enroll
from tests.booking.conftest import niams_calendar
from tests.factories import SiteFactory, participant_for
from trials.models import ProtocolVersion, Site, SiteHours, SiteResource

DAY1 = dt.date(2026, 2, 3)  # a Tuesday; the suite's clock is 2026-01-20 08:00 UTC
pytestmark = pytest.mark.django_db


@dataclass
class Nih:
    version: ProtocolVersion
    site: Site
    client: APIClient

    def visit(self, study_id: str, day1: dt.date = DAY1, code: str = "V2") -> ScheduledVisit:
        participant = participant_for(
            self.version, anchors={"day1": day1}, site=self.site, study_id=study_id
        )
        participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
        return ScheduledVisit.objects.get(participant=participant, visit_definition__code=code)


def _client(django_user_model: Any, name: str, **membership: Any) -> APIClient:
    user = django_user_model.objects.create_user(name)
    Membership.objects.create(user=user, **membership)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def nih(import_seed, django_user_model) -> Nih:
    version = import_seed("000")
    site = niams_calendar(SiteFactory.create(code="nih-cc", name="NIH Clinical Center"))
    client = _client(
        django_user_model, "nih-coordinator", trial=version.trial, site=site, role="coordinator"
    )
    return Nih(version, site, client)


def slots(client: APIClient, visit: ScheduledVisit, query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/v1/visits/{visit.pk}/slots/{query}")
    assert response.status_code == 200, response.content
    return dict(response.json())


def book_slot(client: APIClient, visit: ScheduledVisit, slot: str, key: str, **extra: Any) -> Any:
    visit.refresh_from_db()
    return client.post(
        f"/api/v1/visits/{visit.pk}/book-slot/",
        {"slot": slot, **extra},
        format="json",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v{visit.version}"',
        HTTP_IDEMPOTENCY_KEY=key,
    )


def hold(resource: str, kind: str, procedure: str, start: str, end: str) -> dict[str, Any]:
    """A hold on 3 February 2026 (EST, UTC-5), times given on the site's clock."""

    def utc(local: str) -> str:
        hour, minute = map(int, local.split(":"))
        return f"2026-02-03T{hour + 5:02d}:{minute:02d}:00Z"

    return {
        "resource": resource,
        "kind": kind,
        "staff": False,
        "count": 1,
        "procedure": procedure,
        "start": utc(start),
        "end": utc(end),
        "local_start": f"2026-02-03T{start}:00-05:00",
        "local_end": f"2026-02-03T{end}:00-05:00",
    }


def v2_holds(scanner: str, chair: str = "Chair 1") -> list[dict[str, Any]]:
    """What V2 holds when its scanner time starts at `scanner` (HH:MM on the site's clock)."""
    start = dt.datetime.combine(DAY1, dt.time.fromisoformat(scanner))

    def at(minutes: int) -> str:
        return f"{start + dt.timedelta(minutes=minutes):%H:%M}"

    return [
        hold("PET/CT 1", "PET/CT scanner", "FDGPET", at(0), at(110)),
        hold("CAVI 1", "CAVI device", "CAVI", at(110), at(130)),
        hold(chair, "infusion chair", "INFUSION", at(130), at(220)),
    ]


def free_slot(start: str, end: str, *, scanner: str) -> dict[str, Any]:
    """A free slot on 3 February 2026 (EST), times on the site's clock."""
    utc = {k: hold("", "", "", v, v)["start"] for k, v in (("start", start), ("end", end))}
    return {
        "start": utc["start"],
        "end": utc["end"],
        "local_start": f"2026-02-03T{start}:00-05:00",
        "local_end": f"2026-02-03T{end}:00-05:00",
        "local_date": "2026-02-03",
        "timezone": "America/New_York",
        "status": "free",
        "days_out": 0,
        "deviation": False,
        "holds": v2_holds(scanner),
    }


def test_slots_are_the_earliest_starts_with_what_each_holds(nih: Nih) -> None:
    visit = nih.visit("NIH-001")

    body = slots(nih.client, visit, "?count=3")

    assert body == {
        "visit": visit.pk,
        "visit_code": "V2",
        "visit_etag": f'"visit-{visit.pk}-v1"',
        "site": "nih-cc",
        "timezone": "America/New_York",
        "window_start": "2026-02-03",
        "window_end": "2026-02-03",
        "target_date": "2026-02-03",
        "searched_from": "2026-02-03",
        "searched_to": "2026-02-03",
        "slots": [
            free_slot("07:45", "11:40", scanner="08:00"),
            free_slot("08:00", "11:55", scanner="08:15"),
            free_slot("08:15", "12:10", scanner="08:30"),
        ],
        "deviations": [],
        "reason": "",
        "obstacles": [],
    }


def test_booking_a_slot_holds_what_the_slot_said(nih: Nih) -> None:
    visit = nih.visit("NIH-001")
    slot = slots(nih.client, visit, "?count=1")["slots"][0]

    response = book_slot(nih.client, visit, slot["start"], "book-1")

    assert response.status_code == 200, response.content
    body = response.json()
    assert response["ETag"] == f'"visit-{visit.pk}-v2"'
    assert body["visit"]["status"] == "booked"
    assert {k: v for k, v in body["result"].items() if k != "calendar"} == {
        "visit_code": "V2",
        "status": "booked",
        "booked_start": "2026-02-03T12:45:00Z",
        "booked_end": "2026-02-03T16:40:00Z",
        "local_start": "2026-02-03T07:45:00-05:00",
        "booked_date": "2026-02-03",
        "timezone": "America/New_York",
        "deviation_days": 0,
        "holds": slot["holds"],
    }
    assert list(
        BookingHold.objects.filter(visit=visit)
        .order_by("start")
        .values_list("resource__name", "procedure", "start", "end")
    ) == [
        ("PET/CT 1", "FDGPET", *_utc("13:00", "14:50")),
        ("CAVI 1", "CAVI", *_utc("14:50", "15:10")),
        ("Chair 1", "INFUSION", *_utc("15:10", "16:40")),
    ]
    # A retry with the same key replays the first answer and books nothing twice.
    replay = nih.client.post(
        f"/api/v1/visits/{visit.pk}/book-slot/",
        {"slot": slot["start"]},
        format="json",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
        HTTP_IDEMPOTENCY_KEY="book-1",
    )
    assert (replay.status_code, replay.json(), replay["Idempotent-Replayed"]) == (
        200,
        body,
        "true",
    )
    assert BookingHold.objects.filter(visit=visit).count() == 3


def _utc(start: str, end: str) -> tuple[dt.datetime, dt.datetime]:
    def at(local: str) -> dt.datetime:
        hour, minute = map(int, local.split(":"))
        return dt.datetime(2026, 2, 3, hour, minute, tzinfo=dt.UTC)

    return at(start), at(end)


def test_a_window_without_capacity_gives_the_reason_and_the_nearest_deviations(nih: Nih) -> None:
    # Three V2 visits on Day 1 fill the scanner (07:45, 09:45, 11:45); a fourth has none.
    for n in range(1, 4):
        visit = nih.visit(f"NIH-00{n}")
        start = slots(nih.client, visit, "?count=1")["slots"][0]["start"]
        assert (
            start == ["2026-02-03T12:45:00Z", "2026-02-03T14:45:00Z", "2026-02-03T16:45:00Z"][n - 1]
        )
        assert book_slot(nih.client, visit, start, f"fill-{n}").status_code == 200
    fourth = nih.visit("NIH-004")

    body = slots(nih.client, fourth, "?count=2&per_day=1")

    assert body["slots"] == []
    assert body["reason"] == "window 2026-02-03: PET/CT scanner full on 3 Feb"
    assert body["obstacles"] == [
        {
            "kind": "full",
            "subject": "PET/CT scanner",
            "days": ["2026-02-03"],
            "words": "PET/CT scanner full on 3 Feb",
        }
    ]
    assert [
        (d["local_start"], d["local_date"], d["days_out"], d["deviation"])
        for d in body["deviations"]
    ] == [
        ("2026-02-02T07:45:00-05:00", "2026-02-02", -1, True),
        ("2026-02-04T07:45:00-05:00", "2026-02-04", 1, True),
    ]
    assert [h["local_start"] for h in body["deviations"][0]["holds"]] == [
        "2026-02-02T08:00:00-05:00",
        "2026-02-02T09:50:00-05:00",
        "2026-02-02T10:10:00-05:00",
    ]
    # A deviation is booked with a reason, like any booking outside the window.
    without = book_slot(nih.client, fourth, body["deviations"][0]["start"], "dev-1")
    assert (without.status_code, without.json()["errors"]) == (
        422,
        [
            {
                "field": "reason",
                "message": "a reason is required: 2026-02-02 is 1 day before the window of "
                "V2 (2026-02-03 to 2026-02-03)",
            }
        ],
    )
    booked = book_slot(
        nih.client, fourth, body["deviations"][0]["start"], "dev-2", reason="scanner full"
    )
    assert booked.status_code == 200, booked.content
    assert booked.json()["result"]["deviation_days"] == -1


def test_a_slot_taken_meanwhile_is_a_409_that_says_what_to_do(nih: Nih) -> None:
    mine, theirs = nih.visit("NIH-001"), nih.visit("NIH-002")
    chosen = slots(nih.client, mine, "?count=1")["slots"][0]["start"]
    assert book_slot(nih.client, theirs, chosen, "theirs").status_code == 200

    response = book_slot(nih.client, mine, chosen, "mine")

    message = (
        "the slot 07:45 on 2026-02-03 (America/New_York; 2026-02-03T12:45:00Z) of V2 was "
        "booked by someone else since you read it, so nothing was booked. Read the visit's "
        f"slots again (GET /api/v1/visits/{mine.pk}/slots/) and book one of them; free now: "
        "Tue 2026-02-03 09:45 EST"
    )
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == {
        "type": "/api/v1/problems/slot-taken",
        "title": "Slot taken",
        "status": 409,
        "detail": message,
        "errors": [{"field": "slot", "message": message}],
    }
    mine.refresh_from_db()
    assert (mine.status, mine.version, mine.holds.count()) == ("planned", 1, 0)


@pytest.mark.parametrize(
    ("slot", "message"),
    [
        (
            "2026-02-03T12:45:30Z",
            "slots start on whole minutes; 12:45:30 has seconds or fractions of a second: "
            "send the slot's start as the slots endpoint gives it",
        ),
        (
            "2026-02-03T12:45:00.250000Z",
            "slots start on whole minutes; 12:45:00.250000 has seconds or fractions of a "
            "second: send the slot's start as the slots endpoint gives it",
        ),
        (
            "2026-02-03T12:45:00",
            "give the instant's zone (Z for UTC, or an offset such as -05:00), as the slots "
            "endpoint gives it",
        ),
        (
            "next tuesday",
            "'next tuesday' is not an ISO 8601 instant; send a slot's start as the slots "
            "endpoint gives it, e.g. 2026-02-03T13:00:00Z",
        ),
    ],
)
def test_a_slot_that_is_not_an_instant_on_a_whole_minute_is_a_400(
    nih: Nih, slot: str, message: str
) -> None:
    visit = nih.visit("NIH-001")

    response = book_slot(nih.client, visit, slot, "bad")

    assert response.status_code == 400
    assert response.json() == {
        "type": "/api/v1/problems/invalid-input",
        "title": "Invalid input",
        "status": 400,
        "detail": "1 field(s) are invalid",
        "errors": [{"field": "slot", "message": message}],
    }
    assert BookingHold.objects.count() == 0


def test_a_start_that_is_no_slot_is_refused(nih: Nih) -> None:
    visit = nih.visit("NIH-001")

    # 07:00 EST: the clinic opens at 07:30.
    response = book_slot(nih.client, visit, "2026-02-03T07:00:00-05:00", "early")

    message = (
        "V2 has no slot starting at 07:00 on 2026-02-03 (America/New_York): the site is closed "
        "then, or the visit would not fit its opening hours or its resources' hours. GET "
        f"/api/v1/visits/{visit.pk}/slots/ for the starts that fit"
    )
    assert (response.status_code, response.json()["errors"]) == (
        422,
        [{"field": "slot", "message": message}],
    )


def test_a_date_range_narrows_the_days_searched(nih: Nih) -> None:
    # V10 (week 32) of a Day 1 on 3 February: its window spans several days.
    visit = nih.visit("NIH-001", code="V10")
    first = slots(nih.client, visit, "?count=2&per_day=1")
    day = first["slots"][1]["local_date"]

    narrowed = slots(nih.client, visit, f"?count=1&from={day}&to={day}")

    assert narrowed["searched_from"] == narrowed["searched_to"] == day
    assert narrowed["slots"] == [first["slots"][1]]
    outside = nih.client.get(f"/api/v1/visits/{visit.pk}/slots/?from=2027-01-01")
    assert (outside.status_code, outside.json()["errors"]) == (
        400,
        [
            {
                "field": "from",
                "message": "the days asked do not meet the window of V10 "
                f"({first['window_start']} to {first['window_end']})",
            }
        ],
    )


def test_it_hides_other_sites(nih: Nih, django_user_model) -> None:
    visit = nih.visit("NIH-001")
    other = SiteFactory.create(code="elsewhere")
    client = _client(
        django_user_model, "elsewhere", trial=nih.version.trial, site=other, role="coordinator"
    )

    for url in (f"/api/v1/visits/{visit.pk}/slots/", f"/api/v1/visits/{visit.pk}/book-slot/"):
        response = (
            client.get(url)
            if url.endswith("slots/")
            else client.post(
                url,
                {"slot": "2026-02-03T12:45:00Z"},
                format="json",
                HTTP_IF_MATCH=f'"visit-{visit.pk}-v1"',
                HTTP_IDEMPOTENCY_KEY="other-site",
            )
        )
        assert response.status_code == 404
        assert response.json() == {
            "type": "/api/v1/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "no such visit",
            "errors": [],
        }


def test_a_blinded_role_sees_slots_but_never_an_arm(nih: Nih, django_user_model) -> None:
    from trials.models import Arm

    participant = participant_for(
        nih.version, anchors={"day1": DAY1}, site=nih.site, study_id="NIH-ARM"
    )
    participant_enroll(
        participant=participant,
        on=dt.date(2026, 1, 5),
        arm=Arm.objects.get(version=nih.version, code="ANI"),
    )
    visit = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V2")
    investigator = _client(
        django_user_model,
        "investigator",
        trial=nih.version.trial,
        site=nih.site,
        role="investigator",
    )

    text = investigator.get(f"/api/v1/visits/{visit.pk}/slots/").content.decode()

    assert nih.version.trial.is_blinded
    assert ('"arm"' in text, "ANI" in text) == (False, False)


def test_tsukuba_a_target_on_a_japanese_holiday_is_offered_the_nearest_open_day(
    import_seed, django_user_model
) -> None:
    version = import_seed("001")
    site = SiteFactory.create(
        code="tsukuba", name="筑波大学附属病院", timezone="Asia/Tokyo", country="JP"
    )
    SiteHours.objects.bulk_create(
        SiteHours(site=site, weekday=d, start=dt.time(8, 30), end=dt.time(17)) for d in range(5)
    )
    SiteResource.objects.bulk_create(
        SiteResource(site=site, kind="infusion chair", name=f"チェア{n}") for n in range(1, 5)
    )
    # PSL from Monday 16 November: the first infusion (Day 1, 7 days later by default) is
    # planned on 23 November 2026, 勤労感謝の日 (Labour Thanksgiving Day), window 20-26 Nov.
    participant: Participant = participant_for(
        version, anchors={"psl_start": dt.date(2026, 11, 16)}, site=site, study_id="TSUKUBA-1"
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    visit = ScheduledVisit.objects.get(
        participant=participant, visit_definition__code="INF", occurrence=1
    )
    client = _client(
        django_user_model, "tsukuba", trial=version.trial, site=site, role="coordinator"
    )

    body = slots(client, visit, "?count=3&per_day=1")

    assert (body["target_date"], body["window_start"], body["window_end"]) == (
        "2026-11-23",
        "2026-11-20",
        "2026-11-26",
    )
    # 22 Nov is a Sunday: 24 Nov is nearest; then 25 (21 is a Saturday), then 20.
    assert [
        (s["start"], s["local_start"], s["local_date"], s["days_out"], s["holds"])
        for s in body["slots"]
    ] == [
        ("2026-11-23T23:30:00Z", "2026-11-24T08:30:00+09:00", "2026-11-24", 0, []),
        ("2026-11-24T23:30:00Z", "2026-11-25T08:30:00+09:00", "2026-11-25", 0, []),
        ("2026-11-19T23:30:00Z", "2026-11-20T08:30:00+09:00", "2026-11-20", 0, []),
    ]
    calendar = client.get("/api/v1/sites/tsukuba/calendar/?from=2026-11-20&to=2026-11-26")
    assert calendar.json()["closures"] == [
        {"date": "2026-11-23", "reason": "Labor Thanksgiving Day", "source": "public holiday"}
    ]

    response = book_slot(client, visit, body["slots"][0]["start"], "tsukuba-1")

    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert (result["booked_date"], result["local_start"], result["booked_end"]) == (
        "2026-11-24",
        "2026-11-24T08:30:00+09:00",
        "2026-11-24T01:30:00Z",
    )


THREADS = 10


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_bookings_of_one_slot_one_wins_the_rest_are_told_it_was_taken(
    import_seed, django_user_model
) -> None:
    from django.db import connection, connections

    assert connection.vendor == "postgresql"
    version = import_seed("000")
    site = niams_calendar(SiteFactory.create(code="nih-cc", name="NIH Clinical Center"))
    nih = Nih(version, site, APIClient())
    visits = [nih.visit(f"NIH-{n:03d}") for n in range(THREADS)]
    user = django_user_model.objects.create_user("site-system")
    Membership.objects.create(user=user, trial=version.trial, site=site, role="site_system")
    barrier = threading.Barrier(THREADS)
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def book(visit: ScheduledVisit) -> None:
        client = APIClient()
        client.force_authenticate(user)
        try:
            barrier.wait()
            response = book_slot(client, visit, "2026-02-03T12:45:00Z", f"race-{visit.pk}")
            outcome = (response.status_code, response.json().get("type", "booked"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome = (0, repr(exc))
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=book, args=(visit,)) for visit in visits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(outcomes) == [(200, "booked")] + [(409, "/api/v1/problems/slot-taken")] * (
        THREADS - 1
    )
    assert list(
        BookingHold.objects.filter(resource__name="PET/CT 1").values_list("start", "end")
    ) == [_utc("13:00", "14:50")]


def test_the_schema_maps_slots_and_bookings_to_fhir(nih: Nih) -> None:
    schema = nih.client.get("/api/v1/schema/?format=json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]

    assert sorted(paths["/api/v1/visits/{id}/book-slot/"]["post"]["responses"]) == [
        "200", "400", "401", "403", "404", "406", "409", "412", "415", "422", "428", "429", "503",
    ]  # fmt: skip
    assert (
        "`slot-taken`"
        in paths["/api/v1/visits/{id}/book-slot/"]["post"]["responses"]["409"]["description"]
    )
    assert sorted(paths["/api/v1/visits/{id}/slots/"]["get"]["responses"]) == [
        "200", "400", "401", "403", "404", "406", "429", "503",
    ]  # fmt: skip
    slot = components["SlotOut"]["properties"]
    assert (slot["start"]["description"], slot["status"]["description"]) == (
        "UTC (FHIR Slot.start). Book the slot by sending this as `slot`.",
        'FHIR Slot.status: "free".\n\n* `free` - free',
    )
    assert components["SiteResourceOut"]["description"] == (
        "A FHIR Schedule whose actor is the resource (a Device or Location)."
    )
    assert components["SlotBookingOut"]["properties"]["status"]["description"] == (
        'FHIR Appointment.status: "booked".\n\n* `booked` - booked'
    )
