"""Adversarial booking/slot cases: odd zones, DST gaps and folds, edges of opening hours,
site-today vs UTC-today, last capacity. Every refusal must be a 4xx problem naming a field."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from rest_framework.test import APIClient

from scheduler.models import BookingHold, Membership, ScheduledVisit
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, participant_for
from trials.models import ResourceOutOfService, SiteHours, SiteResource

pytestmark = pytest.mark.django_db
T = dt.time


def make_site(code: str, zone: str, hours: dict[int, tuple[dt.time, dt.time]] | None = None):
    site = SiteFactory.create(code=code, name=code, timezone=zone, country="US")
    hours = hours if hours is not None else {d: (T(0), T(23, 59)) for d in range(7)}
    for day, (a, b) in hours.items():
        SiteHours.objects.create(site=site, weekday=day, start=a, end=b)
    SiteResource.objects.create(site=site, kind="PET/CT scanner", name="PET/CT 1")
    for n in range(1, 5):
        SiteResource.objects.create(site=site, kind="infusion chair", name=f"Chair {n}")
    SiteResource.objects.create(site=site, kind="CAVI device", name="CAVI 1")
    return site


@pytest.fixture
def env(import_seed, django_user_model):
    version = import_seed("000")
    user = django_user_model.objects.create_user("coord")

    class Env:
        def client(self) -> APIClient:
            c = APIClient()
            c.force_authenticate(type(user).objects.get(pk=user.pk))
            return c

        def visit(self, site, study_id: str, day1: dt.date) -> ScheduledVisit:
            Membership.objects.get_or_create(
                user=user, trial=version.trial, site=site, role="coordinator"
            )
            p = participant_for(version, anchors={"day1": day1}, site=site, study_id=study_id)
            participant_enroll(participant=p, on=dt.date(2026, 1, 5))
            return ScheduledVisit.objects.get(participant=p, visit_definition__code="V2")

    return Env()


def problem_ok(response: Any, fields: tuple[str | None, ...]) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json"
    got = [e["field"] for e in response.json().get("errors", [])]
    assert got and all(f in fields for f in got), (fields, response.json())


def get_slots(client, visit, query="?count=40") -> dict:
    r = client.get(f"/api/v1/visits/{visit.pk}/slots/{query}")
    assert r.status_code == 200, r.content[:800]
    return r.json()


def book_slot(client, visit, slot, key, **extra):
    visit.refresh_from_db()
    return client.post(
        f"/api/v1/visits/{visit.pk}/book-slot/",
        {"slot": slot, **extra},
        format="json",
        HTTP_IF_MATCH=f'"visit-{visit.pk}-v{visit.version}"',
        HTTP_IDEMPOTENCY_KEY=key,
    )


def preview(client, visit, day: str, time: str):
    return client.post(
        f"/api/v1/visits/{visit.pk}/book/preview/",
        {"local_date": day, "local_time": time},
        format="json",
    )


def book_local(client, visit, day: str, time: str, key: str, **extra):
    visit.refresh_from_db()
    p = preview(client, visit, day, time)
    if p.status_code != 200:
        return p
    return client.post(
        f"/api/v1/visits/{visit.pk}/book/",
        {
            "local_date": day,
            "local_time": time,
            "preview_digest": p.json()["preview_digest"],
            **extra,
        },
        format="json",
        HTTP_IF_MATCH=p.json()["visit_etag"],
        HTTP_IDEMPOTENCY_KEY=key,
    )


def slot_local_consistent(slot: dict, zone: str) -> None:
    start = dt.datetime.fromisoformat(slot["start"].replace("Z", "+00:00"))
    local = dt.datetime.fromisoformat(slot["local_start"])
    assert start == local
    assert local.utcoffset() == start.astimezone(ZoneInfo(zone)).utcoffset()
    assert slot["local_date"] == start.astimezone(ZoneInfo(zone)).date().isoformat()


# --- odd zones, DST gaps and folds -------------------------------------------------------

ZONE_DAYS = [
    ("Pacific/Chatham", dt.date(2026, 9, 27)),  # gap 02:45 -> 03:45
    ("Pacific/Chatham", dt.date(2026, 4, 5)),  # fold 03:45 -> 02:45
    ("Asia/Kathmandu", dt.date(2026, 2, 3)),
    ("America/St_Johns", dt.date(2026, 3, 8)),  # gap 02:00 -> 03:00
    ("America/St_Johns", dt.date(2026, 11, 1)),  # fold 02:00 -> 01:00 (tzdata: 00:01?)
    ("Australia/Lord_Howe", dt.date(2026, 10, 4)),  # gap 02:00 -> 02:30
    ("Australia/Lord_Howe", dt.date(2026, 4, 5)),  # fold 02:00 -> 01:30
]


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
def test_every_offered_slot_is_consistent_and_the_earliest_books(env, zone, day) -> None:
    site = make_site("s", zone)
    visit = env.visit(site, "X-1", day)
    body = get_slots(env.client(), visit)
    assert body["slots"], body["reason"]
    for s in body["slots"]:
        slot_local_consistent(s, zone)
        assert s["local_date"] == day.isoformat()
    r = book_slot(env.client(), visit, body["slots"][0]["start"], "k1")
    assert r.status_code == 200, r.content[:800]
    assert r.json()["result"]["booked_start"] == body["slots"][0]["start"]


@pytest.mark.parametrize(("zone", "day"), [z for z in ZONE_DAYS if z[1].month in (4, 11)])
def test_fold_every_offered_slot_can_be_booked(env, zone, day) -> None:
    """On the day the clocks go back, a wall time in the repeated hour names its first run
    only (a booking names a local time): the second run's slots were offered and then
    refused by every booking. Now each wall time is offered once, and every slot offered
    books."""
    site = make_site("s", zone)
    client = env.client()
    probe = env.visit(site, "X-0", day)
    body = get_slots(client, probe, "?count=50")
    walls = [s["local_start"][:19] for s in body["slots"]]
    # What a booking of each slot's wall time means: its first run (fold=0), in UTC.
    named = [
        dt.datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)
        for wall in walls
    ]
    starts = [dt.datetime.fromisoformat(s["start"].replace("Z", "+00:00")) for s in body["slots"]]
    first = book_slot(client, env.visit(site, "X-1", day), body["slots"][0]["start"], "k1")

    assert body["slots"], "the day offers slots"
    assert named == starts  # every slot offered is the one its wall time names
    assert len(walls) == len(set(walls))
    assert first.status_code == 200, first.content[:300]


@pytest.mark.parametrize(
    ("zone", "day", "time"),
    [
        ("America/St_Johns", "2026-03-08", "02:30"),  # nonexistent
        ("Australia/Lord_Howe", "2026-10-04", "02:15"),  # nonexistent
        ("Pacific/Chatham", "2026-09-27", "03:00"),  # nonexistent
        ("Australia/Lord_Howe", "2026-04-05", "01:45"),  # ambiguous
        ("Pacific/Chatham", "2026-04-05", "03:00"),  # ambiguous
    ],
)
def test_booking_by_local_time_in_a_gap_or_fold_is_not_a_500(env, zone, day, time) -> None:
    site = make_site("s", zone)
    visit = env.visit(site, "X-1", dt.date.fromisoformat(day))
    r = book_local(env.client(), visit, day, time, "k1")
    assert r.status_code < 500, r.content[:500]
    if r.status_code == 200:
        start = dt.datetime.fromisoformat(r.json()["result"]["booked_start"].replace("Z", "+00:00"))
        assert start.astimezone(ZoneInfo(zone)).date().isoformat() == day
        assert BookingHold.objects.filter(visit=visit).exists()
    else:
        problem_ok(r, ("local_time", "local_date"))


# --- edges of opening hours --------------------------------------------------------------

DAY1 = dt.date(2026, 2, 3)  # Tuesday


def test_local_time_at_the_exact_close_is_refused_naming_local_time(env) -> None:
    site = make_site("s", "America/New_York", {d: (T(7, 30), T(17, 30)) for d in range(5)})
    visit = env.visit(site, "X-1", DAY1)
    r = book_local(env.client(), visit, "2026-02-03", "17:30", "k1")
    problem_ok(r, ("local_time",))
    visit.refresh_from_db()
    assert (visit.status, visit.holds.count()) == ("planned", 0)


def test_a_slot_at_the_exact_close_is_refused_naming_slot(env) -> None:
    site = make_site("s", "America/New_York", {d: (T(7, 30), T(17, 30)) for d in range(5)})
    visit = env.visit(site, "X-1", DAY1)
    r = book_slot(env.client(), visit, "2026-02-03T17:30:00-05:00", "k1")
    problem_ok(r, ("slot",))


@pytest.mark.parametrize("time", ["24:00", "25:00", "12:60", "", None, "noon"])
def test_bad_local_time_is_a_400_naming_local_time(env, time) -> None:
    site = make_site("s", "America/New_York")
    visit = env.visit(site, "X-1", DAY1)
    r = preview(env.client(), visit, "2026-02-03", time)
    problem_ok(r, ("local_time",))


def test_site_hours_ending_at_2359_offer_nothing_past_midnight(env) -> None:
    site = make_site("s", "Asia/Kathmandu", {1: (T(21), T(23, 59))})
    visit = env.visit(site, "X-1", DAY1)
    body = get_slots(env.client(), visit)
    assert body["slots"] == []
    assert body["reason"]
    r = book_local(env.client(), visit, "2026-02-03", "21:00", "k1")
    problem_ok(r, ("local_time", "local_date"))


def test_a_procedure_longer_than_any_opening(env) -> None:
    site = make_site("s", "America/New_York", {d: (T(8), T(9)) for d in range(7)})
    visit = env.visit(site, "X-1", DAY1)
    body = get_slots(env.client(), visit)
    assert body["slots"] == [] and body["deviations"] == []
    assert body["reason"]
    r = book_local(env.client(), visit, "2026-02-03", "08:00", "k1")
    problem_ok(r, ("local_time", "local_date"))


def test_a_resource_out_of_service_for_part_of_a_day(env) -> None:
    site = make_site("s", "Pacific/Chatham", {d: (T(7, 30), T(17, 30)) for d in range(5)})
    zone = ZoneInfo("Pacific/Chatham")
    scanner = SiteResource.objects.get(site=site, kind="PET/CT scanner")
    oos_start = dt.datetime(2026, 2, 3, 9, 0, tzinfo=zone)
    oos_end = dt.datetime(2026, 2, 3, 13, 0, tzinfo=zone)
    ResourceOutOfService.objects.create(
        resource=scanner, start=oos_start, end=oos_end, reason="service"
    )
    visit = env.visit(site, "X-1", DAY1)
    body = get_slots(env.client(), visit, "?count=50")
    assert body["slots"]
    for s in body["slots"]:
        for h in s["holds"]:
            if h["kind"] == "PET/CT scanner":
                a = dt.datetime.fromisoformat(h["start"].replace("Z", "+00:00"))
                b = dt.datetime.fromisoformat(h["end"].replace("Z", "+00:00"))
                assert b <= oos_start or a >= oos_end, s["local_start"]
    # booking by local time into the outage: scanner 09:15-11:05 with a 09:00 start
    r = book_local(env.client(), visit, "2026-02-03", "09:00", "k1")
    problem_ok(r, ("local_time",))


# --- site today vs UTC today ---------------------------------------------------------------


def test_today_at_the_site_when_utc_is_still_yesterday(env) -> None:
    # 2026-02-02 22:00Z is 2026-02-03 03:45 in Kathmandu: booking its today 08:00 is future.
    site = make_site("s", "Asia/Kathmandu", {d: (T(7, 30), T(17, 30)) for d in range(5)})
    visit = env.visit(site, "X-1", DAY1)
    with time_machine.travel(dt.datetime(2026, 2, 2, 22, 0, tzinfo=dt.UTC), tick=False):
        body = get_slots(env.client(), visit)
        assert body["slots"] and body["slots"][0]["local_date"] == "2026-02-03"
        r = book_local(env.client(), visit, "2026-02-03", "08:00", "k1")
        assert r.status_code == 200, r.content[:600]


def test_today_at_the_site_when_utc_is_already_tomorrow(env) -> None:
    # 2026-02-04 02:00Z is 2026-02-03 22:30 in St John's: 08:00 of its today has passed.
    site = make_site("s", "America/St_Johns")
    visit = env.visit(site, "X-1", DAY1)
    with time_machine.travel(dt.datetime(2026, 2, 4, 2, 0, tzinfo=dt.UTC), tick=False):
        body = get_slots(env.client(), visit)
        for s in body["slots"]:
            assert dt.datetime.fromisoformat(s["local_start"]) >= dt.datetime(
                2026, 2, 3, 22, 30, tzinfo=ZoneInfo("America/St_Johns")
            )
        r = book_local(env.client(), visit, "2026-02-03", "08:00", "k1")
        problem_ok(r, ("local_time",))
        r = book_local(env.client(), visit, "2026-02-02", "23:00", "k2")
        problem_ok(r, ("local_date",))
        # 2026-02-03 23:00 St John's is still later today there
        r = book_local(env.client(), visit, "2026-02-03", "23:00", "k3", reason="")
        assert r.status_code in (200, 422), r.content[:600]
        assert r.status_code != 422 or "passed" not in r.content.decode()


# --- last capacity -------------------------------------------------------------------------


def test_second_booking_for_the_last_capacity_is_refused_cleanly(env) -> None:
    site = make_site("s", "Asia/Kathmandu", {d: (T(7, 30), T(17, 30)) for d in range(5)})
    a, b = env.visit(site, "X-1", DAY1), env.visit(site, "X-2", DAY1)
    first = book_local(env.client(), a, "2026-02-03", "08:00", "ka")
    assert first.status_code == 200, first.content[:600]
    before = BookingHold.objects.count()
    second = book_local(env.client(), b, "2026-02-03", "08:00", "kb")
    problem_ok(second, ("local_time",))
    assert "full" in second.json()["detail"] or "booked" in second.json()["detail"]
    b.refresh_from_db()
    assert (b.status, b.version, b.holds.count()) == ("planned", 1, 0)
    assert BookingHold.objects.count() == before
