"""Read endpoints: what each role sees, and query counts that do not grow with the data."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scheduler.services import participant_enroll
from tests.api.conftest import World
from tests.factories import participant_for


@pytest.mark.django_db
def test_next_weeks_pet_ct_visits_at_a_site(world: World) -> None:
    response = world.client("site_system").get(
        "/api/v1/visits/?site=berlin&from=2026-02-02&to=2026-02-08&procedure=FDGPET"
    )

    assert response.status_code == 200
    visits = response.json()["results"]
    assert [(v["study_id"], v["code"], v["target_date"], v["glance_status"]) for v in visits] == [
        ("BERLIN-001", "V2", "2026-02-02", "upcoming")
    ]
    assert "FDGPET" in [p["code"] for p in visits[0]["procedures"]]
    assert visits[0]["window"] == {"start": "2026-02-02", "end": "2026-02-02"}
    assert visits[0]["etag"] == f'"visit-{visits[0]["id"]}-v1"'


@pytest.mark.django_db
def test_a_calendar_has_windows_statuses_milestones(world: World) -> None:
    participant = world.people["BERLIN-001"]
    response = world.client("coordinator").get(f"/api/v1/participants/{participant.pk}/calendar/")

    assert response.status_code == 200
    calendar = response.json()
    assert (calendar["study_id"], calendar["site"], calendar["site_today"]) == (
        "BERLIN-001",
        "berlin",
        "2026-01-20",
    )
    first = calendar["visits"][0]
    assert (first["code"], first["window"], first["glance_status"]) == (
        "V1",
        {"start": "2026-01-05", "end": "2026-01-19"},
        "overdue",
    )
    assert len(calendar["visits"]) == participant.visits.count()
    assert len(calendar["milestones"]) == participant.milestones.count()
    assert calendar["taper_doses"] == [m for m in calendar["milestones"] if m["dose_mg"]]


@pytest.mark.django_db
def test_contact_details_and_arm_depend_on_the_role(world: World) -> None:
    pk = world.people["BERLIN-001"].pk
    seen = {
        role: world.client(role).get(f"/api/v1/participants/{pk}/").json()
        for role in ("coordinator", "investigator", "site_system", "unblinded_pharmacist")
    }

    assert seen["coordinator"]["contact"] == {
        "email": "berlin-001@example.org",
        "phone": "+49 30 1234567",
        "guardian_name": "",
        "guardian_email": "",
        "guardian_phone": "",
    }
    assert seen["investigator"]["contact"] == seen["coordinator"]["contact"]
    assert seen["site_system"]["contact"] is None
    assert seen["unblinded_pharmacist"]["contact"] is None
    assert [seen[role]["arm"] for role in seen] == [None, None, None, "ANI"]


@pytest.mark.django_db
def test_the_schedule_of_activities_as_data(world: World) -> None:
    response = world.client("data_manager").get("/api/v1/trials/niams-ani-vascular/versions/1.0/")

    assert response.status_code == 200
    schedule = response.json()
    v2 = next(v for v in schedule["visits"] if v["code"] == "V2")
    assert v2["anchor"] == {"anchor": "day1", "visit": None, "occurrence": None}
    assert v2["window"] == {"before": 0, "after": 0}
    fdg = next(p for p in v2["procedures"] if p["procedure"] == "FDGPET")
    assert fdg["duration_minutes"] == next(
        p["duration_minutes"] for p in schedule["procedures"] if p["code"] == "FDGPET"
    )
    # A data manager works on protocols: no participants.
    assert world.client("data_manager").get("/api/v1/participants/").json()["results"] == []


LISTS = {
    "coordinator": [
        "/api/v1/trials/",
        "/api/v1/sites/",
        "/api/v1/participants/",
        "/api/v1/visits/?page_size=200",
        "/api/v1/visits/?site=berlin&procedure=FDGPET&from=2026-01-01&to=2027-12-31",
    ],
    "unblinded_pharmacist": ["/api/v1/participants/"],
    "sponsor_monitor": ["/api/v1/participants/", "/api/v1/visits/?page_size=200"],
}


def _counts(world: World) -> dict[tuple[str, str], tuple[int, int]]:
    """(role, url) -> (queries, rows returned)."""
    counts = {}
    for role, urls in LISTS.items():
        for url in urls:
            client = world.client(role)
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url)
            assert response.status_code == 200, response.content
            counts[(role, url)] = (len(queries), len(response.json()["results"]))
    return counts


@pytest.mark.django_db
def test_list_query_counts_do_not_grow_with_the_rows(world: World) -> None:
    small = _counts(world)
    version = world.trial.versions.get()
    from trials.models import Arm

    for n in (2, 3):
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 2, 9)},
            site=world.berlin,
            study_id=f"BERLIN-00{n}",
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 5),
            arm=Arm.objects.get(version=version, code="PBO"),
        )
    large = _counts(world)

    for key in small:
        if key[1] not in ("/api/v1/trials/", "/api/v1/sites/"):
            assert large[key][1] > small[key][1], key  # more rows …
    assert {k: q for k, (q, _rows) in large.items()} == {k: q for k, (q, _) in small.items()}
    # Visit lists: the page, then once each its participants (with trial and site), visit
    # definitions, protocol versions, scheduled procedures and procedures (a join per row
    # built five model instances per visit: bench/api.py).
    assert {k: q for k, (q, _rows) in small.items()} == {
        ("coordinator", "/api/v1/trials/"): 2,
        ("coordinator", "/api/v1/sites/"): 2,
        ("coordinator", "/api/v1/participants/"): 3,
        ("coordinator", "/api/v1/visits/?page_size=200"): 7,
        (
            "coordinator",
            "/api/v1/visits/?site=berlin&procedure=FDGPET&from=2026-01-01&to=2027-12-31",
        ): 7,
        ("unblinded_pharmacist", "/api/v1/participants/"): 4,
        ("sponsor_monitor", "/api/v1/participants/"): 3,
        ("sponsor_monitor", "/api/v1/visits/?page_size=200"): 7,
    }
