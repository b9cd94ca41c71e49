"""The site's calendar as data: opening hours, closures (the site's own and US federal
holidays), resources with capacity, own hours, out-of-service periods and bookings, staff
shifts; scoped to the caller's sites, another trial's bookings shown as busy time only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from scheduler.models import Membership, ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.booking.conftest import niams_calendar
from tests.factories import SiteFactory, participant_for
from trials.models import ResourceOutOfService, Site, SiteClosure, SiteResource, StaffShift

T = dt.time
DAY1 = dt.date(2026, 2, 3)
pytestmark = pytest.mark.django_db
URL = "/api/v1/sites/nih-cc/calendar/?from=2026-02-02&to=2026-02-16"


def _client(django_user_model: Any, name: str, **membership: Any) -> APIClient:
    user = django_user_model.objects.create_user(name)
    Membership.objects.create(user=user, **membership)
    client = APIClient()
    client.force_authenticate(user)
    return client


def _booked_v2(version: Any, site: Site, study_id: str, at: dt.time, by: Any) -> ScheduledVisit:
    participant = participant_for(version, anchors={"day1": DAY1}, site=site, study_id=study_id)
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    visit = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V2")
    visit_book(visit=visit, local_date=DAY1, local_time=at, by=by)
    return visit


@pytest.fixture
def nih(import_seed, django_user_model) -> dict[str, Any]:
    niams = import_seed("000")
    site = niams_calendar(SiteFactory.create(code="nih-cc", name="NIH Clinical Center"))
    SiteClosure.objects.create(site=site, date=dt.date(2026, 2, 6), reason="fire drill")
    ResourceOutOfService.objects.create(
        resource=SiteResource.objects.get(name="PET/CT 1"),
        start=dt.datetime(2026, 2, 9, 13, tzinfo=dt.UTC),
        end=dt.datetime(2026, 2, 13, 22, tzinfo=dt.UTC),
        reason="detector service",
    )
    StaffShift.objects.create(
        site=site, kind="infusion nurse", weekday=0, start=T(8), end=T(16), count=2
    )
    coordinator = _client(
        django_user_model, "nih-coordinator", trial=niams.trial, site=site, role="coordinator"
    )
    booker = django_user_model.objects.create_user("booker")
    visit = _booked_v2(niams, site, "NIH-001", T(7, 45), booker)
    return {"version": niams, "site": site, "client": coordinator, "visit": visit, "by": booker}


def weekdays(start: str, end: str) -> list[dict[str, Any]]:
    return [
        {"weekday": d, "day_of_week": code, "start": start, "end": end}
        for d, code in enumerate(("mon", "tue", "wed", "thu", "fri"))
    ]


def busy(start: str, end: str, **visit: Any) -> dict[str, Any]:
    """A booking on 3 February 2026 (EST), times on the site's clock."""

    def utc(local: str) -> str:
        hour, minute = map(int, local.split(":"))
        return f"2026-02-03T{hour + 5:02d}:{minute:02d}:00Z"

    return {
        "start": utc(start),
        "end": utc(end),
        "local_start": f"2026-02-03T{start}:00-05:00",
        "local_end": f"2026-02-03T{end}:00-05:00",
        "local_date": "2026-02-03",
        "status": "busy",
        "count": 1,
        "visit": None,
        "visit_code": None,
        "participant": None,
        "procedure": None,
        "appointment_status": None,
        **visit,
    }


def calendar_body(*, scanner: list, cavi: list, chair: list) -> dict[str, Any]:
    def resource(name: str, kind: str, bookings: list, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "kind": kind,
            "capacity": 1,
            "hours": [],
            "out_of_service": [],
            "bookings": bookings,
            **extra,
        }

    return {
        "site": "nih-cc",
        "timezone": "America/New_York",
        "country": "US",
        "subdivision": "",
        "from": "2026-02-02",
        "to": "2026-02-16",
        "hours": weekdays("07:30", "17:30"),
        "closures": [
            {"date": "2026-02-06", "reason": "fire drill", "source": "site"},
            {"date": "2026-02-16", "reason": "Washington's Birthday", "source": "public holiday"},
        ],
        "resources": [
            resource("CAVI 1", "CAVI device", cavi),
            resource(
                "PET/CT 1",
                "PET/CT scanner",
                scanner,
                hours=weekdays("08:00", "16:00"),
                out_of_service=[
                    {
                        "start": "2026-02-09T13:00:00Z",
                        "end": "2026-02-13T22:00:00Z",
                        "local_start": "2026-02-09T08:00:00-05:00",
                        "local_end": "2026-02-13T17:00:00-05:00",
                        "status": "busy-unavailable",
                        "reason": "detector service",
                    }
                ],
            ),
            resource("Chair 1", "infusion chair", chair),
            *(resource(f"Chair {n}", "infusion chair", []) for n in range(2, 5)),
        ],
        "staff": [
            {
                "kind": "infusion nurse",
                "shifts": [
                    {
                        "weekday": 0,
                        "day_of_week": "mon",
                        "start": "08:00",
                        "end": "16:00",
                        "count": 2,
                    }
                ],
                "bookings": [],
            }
        ],
    }


def test_the_site_calendar_lists_hours_closures_resources_staff_and_bookings(nih) -> None:
    visit = nih["visit"]
    ours = {
        "visit": visit.pk,
        "visit_code": "V2",
        "participant": visit.participant_id,
        "appointment_status": "booked",
    }

    response = nih["client"].get(URL)

    assert response.status_code == 200
    assert response.json() == calendar_body(
        scanner=[busy("08:00", "09:50", procedure="FDGPET", **ours)],
        cavi=[busy("09:50", "10:10", procedure="CAVI", **ours)],
        chair=[busy("10:10", "11:40", procedure="INFUSION", **ours)],
    )


def test_another_trials_bookings_are_busy_time_only(nih, import_seed, django_user_model) -> None:
    tsukuba = import_seed("001")
    client = _client(
        django_user_model,
        "tsukuba-at-nih",
        trial=tsukuba.trial,
        site=nih["site"],
        role="coordinator",
    )

    response = client.get(URL)

    assert response.status_code == 200
    assert response.json() == calendar_body(
        scanner=[busy("08:00", "09:50")],
        cavi=[busy("09:50", "10:10")],
        chair=[busy("10:10", "11:40")],
    )
    assert "NIH-001" not in response.content.decode()


def test_the_site_calendar_reads_in_the_same_number_of_queries_for_more_bookings(nih) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert nih["client"].get(URL).status_code == 200
        return len(captured)

    nih["client"].get(URL)  # the user's memberships are read once and kept on it
    one = queries()
    for n, at in ((2, T(9, 45)), (3, T(11, 45))):
        _booked_v2(nih["version"], nih["site"], f"NIH-00{n}", at, nih["by"])
    three = queries()

    assert len(nih["client"].get(URL).json()["resources"][1]["bookings"]) == 3
    assert (one, three) == (9, 9)


def test_it_hides_other_sites(nih, django_user_model) -> None:
    other = SiteFactory.create(code="elsewhere")
    client = _client(
        django_user_model, "elsewhere", trial=nih["version"].trial, site=other, role="coordinator"
    )
    data_manager = _client(
        django_user_model, "dm", trial=nih["version"].trial, site=None, role="data_manager"
    )

    for caller in (client, data_manager):
        response = caller.get(URL)
        assert response.status_code == 404
        assert response.json() == {
            "type": "/api/v1/problems/not-found",
            "title": "Not found",
            "status": 404,
            "detail": "no such site",
            "errors": [],
        }


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("from=2026-02-10&to=2026-02-09", "to", "must be on or after 'from'"),
        ("from=2026-02-01&to=2026-04-30", "to", "at most 62 days from 'from'"),
        (
            "from=2026-02-30",
            "from",
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
        ),
    ],
)
def test_a_bad_range_is_a_400_naming_the_parameter(nih, query, field, message) -> None:
    response = nih["client"].get(f"/api/v1/sites/nih-cc/calendar/?{query}")

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": field, "message": message}]


def test_the_default_range_is_a_week_from_the_sites_today(nih) -> None:
    # The suite's clock: 2026-01-20 08:00 UTC is 03:00 on 20 January in Bethesda.
    body = nih["client"].get("/api/v1/sites/nih-cc/calendar/").json()

    assert (body["from"], body["to"]) == ("2026-01-20", "2026-01-26")
    assert body["closures"] == []
