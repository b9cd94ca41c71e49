"""Adversarial reads of the list endpoints: cursors and page sizes a client can forge, filters
naming what the caller may not see, blinded arms, and query counts that must not grow.

Each test states what the API promises (README "API for site systems", scheduler/api/errors.py:
every error a 4xx problem document naming the field at fault; another site's objects exactly
like ones that do not exist; the arm only where `access.can_see_arm` allows it)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scheduler.models import Reminder, ScheduledVisit
from scheduler.services import participant_enroll
from tests.api.conftest import World
from tests.factories import SiteFactory, participant_for
from trials.models import Arm, TrialSite

PROBLEM = "application/problem+json"


# Every paginated list a site system (or a person) reads.
def _lists(world: World) -> dict[str, str]:
    berlin = world.people["BERLIN-001"]
    return {
        "visits": "/api/v1/visits/",
        "participants": "/api/v1/participants/",
        "sites": "/api/v1/sites/",
        "trials": "/api/v1/trials/",
        "participant-reminders": f"/api/v1/participants/{berlin.pk}/reminders/",
        "visit-reminders": f"/api/v1/visits/{world.visit('BERLIN-001', 'V2').pk}/reminders/",
        "participant-feeds": f"/api/v1/participants/{berlin.pk}/feeds/",
        "site-feeds": "/api/v1/sites/berlin/feeds/",
        "webhooks": "/api/v1/webhooks/",
    }


def cursor(querystring: str) -> str:
    """A cursor as DRF encodes one: base64 of `o=<offset>&r=<reverse>&p=<position>`."""
    return base64.b64encode(querystring.encode()).decode()


def _walk(client: Any, url: str, link: str = "next") -> list[list[int]]:
    """Every page's ids, following `next` (or `previous`) links to the end."""
    pages: list[list[int]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([row["id"] for row in body["results"]])
        url = body[link]
        assert len(pages) < 500, "the links loop"
    return pages


def _crowd(world: World, *, enrolled: int = 16, screening: int = 0) -> None:
    """More NIAMS participants at Berlin, every one with the same Day 1 as BERLIN-001: each
    visit code falls on one day for all of them (ties in the day), 12 visits each."""
    version = world.trial.versions.get()
    placebo = Arm.objects.get(version=version, code="PBO")
    for n in range(2, 2 + enrolled):
        participant = participant_for(
            version,
            anchors={"day1": dt.date(2026, 2, 2)},
            site=world.berlin,
            study_id=f"BERLIN-{n:03d}",
        )
        participant_enroll(participant=participant, on=dt.date(2026, 1, 5), arm=placebo)
    for n in range(500, 500 + screening):
        participant_for(
            version, anchors={"day1": dt.date(2026, 2, 2)}, site=world.berlin, study_id=f"S-{n}"
        )


# ----------------------------------------------------------------------------------------
# Cursors a client can forge


@pytest.mark.django_db
def test_a_forged_cursor_position_is_a_400_naming_the_cursor_not_a_500(world: World) -> None:
    """DRF's cursor is base64 of a query string, not signed: anyone can send `p=abc`. Its
    position went straight into `id__gt=<p>` (or `code__gt`), and a non-integer raised
    ValueError: a 500 on every list. `p=2026-02-02` is what a day-ordered cursor would carry,
    `p=1.5`, `p=-5`, `p=\\x00` and a 101-character position plain garbage."""
    client = world.client("site_system")
    observed = {}
    for name, url in _lists(world).items():
        ordered_by_code = name in ("sites", "trials")
        for position in ("abc", "2026-02-02", "1.5", "-5", "\x00", "9" * 101):
            if ordered_by_code and position in ("abc", "2026-02-02", "1.5", "-5"):
                continue  # a code: any text without NUL is a position
            response = client.get(url, {"cursor": cursor(f"p={position}")})
            body = response.json()
            observed[(name, position)] = (
                response.status_code,
                response["Content-Type"],
                [e["field"] for e in body.get("errors", [])],
            )

    assert observed == {key: (400, PROBLEM, ["cursor"]) for key in observed}


@pytest.mark.django_db
def test_a_malformed_cursor_is_a_400_naming_the_cursor(
    world: World,
) -> None:
    """Garbage, truncated, non-ASCII or negative-offset cursors: DRF raises NotFound("Invalid
    cursor"), which the handler answers as 404 `not-found` ("no such object for you") with
    no `errors`. Never a 500 (that part holds); the expected answer is a 400 `invalid-input`
    naming `cursor`, like every other bad query parameter."""
    client = world.client("coordinator")
    valid = client.get("/api/v1/visits/", {"page_size": 2}).json()["next"].split("cursor=")[1]
    bad = {
        "garbage": "!!!not-base64!!!",
        "truncated": valid[:-3],
        "non-ascii": "é",
        "negative offset": cursor("o=-1&p=3"),
        "reverse not a number": cursor("r=x&p=3"),
    }
    observed = {}
    for label, value in bad.items():
        response = client.get("/api/v1/visits/", {"cursor": value})
        assert response.status_code < 500, (label, response.content)
        assert response["Content-Type"] == PROBLEM
        body = response.json()
        fields = tuple(e["field"] for e in body["errors"])
        observed[label] = (response.status_code, body["type"], body["detail"], fields)

    # Today every one is (404, ".../not-found", "Invalid cursor", ()). What the API
    # promises: a 400 `invalid-input` that names the parameter at fault.
    assert {(v[0], v[1], v[3]) for v in observed.values()} == {
        (400, "/api/v1/problems/invalid-input", ("cursor",))
    }


@pytest.mark.django_db
def test_odd_but_well_formed_cursors_answer_200_without_leaking(world: World) -> None:
    """A huge position (past the 64-bit ids), an offset past DRF's cap of
    1000, an empty cursor, and a cursor taken from another list or another filter set: each
    is a 200 of rows the caller reads anyway (cursors are not bound to their list: a foreign
    one silently skips rows by id, but shows nothing more)."""
    client = world.client("coordinator")
    berlin_visits = set(
        ScheduledVisit.objects.filter(participant__site=world.berlin).values_list("pk", flat=True)
    )

    def ids(params: dict[str, Any]) -> list[int]:
        response = client.get("/api/v1/visits/", params)
        assert response.status_code == 200, (params, response.content)
        return [row["id"] for row in response.json()["results"]]

    assert ids({"cursor": cursor("p=99999999999999999999")}) == []
    assert ids({"cursor": cursor("o=5000")}) == []
    assert set(ids({"cursor": ""})) == berlin_visits
    # A participants-list cursor and a cursor of `?site=tokyo` used on Berlin's visits.
    participants_next = client.get("/api/v1/participants/", {"page_size": 1}).json()["next"]
    assert participants_next is None  # one Berlin participant: no next page to take
    tokyo_first = world.people["TOKYO-001"].visits.order_by("pk").values_list("pk", flat=True)[0]
    foreign = cursor(f"p={tokyo_first}")
    seen = ids({"cursor": foreign, "site": "tokyo"}) + ids({"cursor": foreign})
    assert set(seen) <= berlin_visits


# ----------------------------------------------------------------------------------------
# Page sizes


@pytest.mark.django_db
def test_a_page_size_of_zero_negative_or_not_a_number_is_named_not_ignored(world: World) -> None:
    """`?page_size=0`, `-1`, `abc` or `1.5`: DRF's get_page_size swallows the ValueError and
    serves the default 50 rows, so a client's typo goes unnoticed (every other bad query
    parameter is a 400 naming it: tests/api/test_errors_and_docs.py)."""
    client = world.client("coordinator")
    observed = {}
    for value in ("0", "-1", "abc", "1.5", "00", "٣", ""):
        response = client.get("/api/v1/visits/", {"page_size": value})
        body = response.json()
        observed[value] = (response.status_code, [e["field"] for e in body.get("errors", [])])

    assert observed == {value: (400, ["page_size"]) for value in observed}


# ----------------------------------------------------------------------------------------
# Every row once across pages


@pytest.mark.django_db
def test_every_visit_once_across_pages_both_ways_with_ties_in_the_day_and_a_cap_of_200(
    world: World,
) -> None:
    _crowd(world)  # 17 Berlin participants: each visit code on one day, 17 ties a day
    client = world.client("site_system")
    expected = sorted(
        ScheduledVisit.objects.filter(participant__site=world.berlin).values_list("pk", flat=True)
    )
    assert len(expected) == 17 * 12

    for size in (13, 200):
        pages = _walk(client, f"/api/v1/visits/?site=berlin&page_size={size}")
        ids = [pk for page in pages for pk in page]
        assert sorted(ids) == expected and len(ids) == len(set(ids)), size
        # And back from the last page along `previous`.
        last = client.get(f"/api/v1/visits/?site=berlin&page_size={size}")
        url = last.json()["next"]
        while url:
            body = client.get(url).json()
            if not body["next"]:
                break
            url = body["next"]
        back = _walk(client, url or f"/api/v1/visits/?site=berlin&page_size={size}", "previous")
        back_ids = [pk for page in back for pk in page]
        assert sorted(back_ids) == expected and len(back_ids) == len(set(back_ids)), size

    # A page size above 200 is capped at 200 (README: "up to 200").
    for value in ("201", "100000", "99999999999999999999999"):
        response = client.get("/api/v1/visits/", {"page_size": value})
        assert response.status_code == 200
        assert len(response.json()["results"]) == 200, value


@pytest.mark.django_db
def test_rows_changed_deleted_or_added_between_pages_neither_repeat_nor_vanish(
    world: World,
) -> None:
    """Between page 1 and page 2: the last row of page 1 is deleted, a row of page 2 is
    moved to another day (booked), and a new participant's visits are added. Every row that
    existed throughout appears exactly once; the new rows come at the end."""
    _crowd(world, enrolled=4)
    client = world.client("coordinator")
    first = client.get("/api/v1/visits/", {"page_size": 20}).json()
    page1 = [row["id"] for row in first["results"]]

    # A reminder list too: delete the row the cursor points at.
    reminders_url = f"/api/v1/participants/{world.people['BERLIN-001'].pk}/reminders/"
    r_first = client.get(reminders_url, {"page_size": 10}).json()
    r_page1 = [row["id"] for row in r_first["results"]]
    Reminder.objects.filter(pk=r_page1[-1]).delete()

    visits_before = set(
        ScheduledVisit.objects.filter(participant__site=world.berlin).values_list("pk", flat=True)
    )
    later = ScheduledVisit.objects.filter(participant__site=world.berlin).exclude(pk__in=page1)
    moved = later.order_by("pk")[3]
    # Booked two weeks later than its day: its `day` (the list's declared key) changes.
    ScheduledVisit.objects.filter(pk=moved.pk).update(
        status="booked",
        booked_date=moved.target_date + dt.timedelta(days=14),
        booked_start=dt.datetime.combine(
            moved.target_date + dt.timedelta(days=14), dt.time(8), tzinfo=dt.UTC
        ),
    )
    version = world.trial.versions.get()
    newcomer = participant_for(
        version, anchors={"day1": dt.date(2026, 2, 2)}, site=world.berlin, study_id="BERLIN-NEW"
    )
    participant_enroll(
        participant=newcomer,
        on=dt.date(2026, 1, 5),
        arm=Arm.objects.get(version=version, code="ANI"),
    )

    rest = _walk(client, first["next"])
    seen = page1 + [pk for page in rest for pk in page]
    assert len(seen) == len(set(seen))
    assert visits_before <= set(seen)
    assert set(seen) - visits_before == set(newcomer.visits.values_list("pk", flat=True))

    r_rest = _walk(client, r_first["next"])
    r_seen = r_page1 + [pk for page in r_rest for pk in page]
    assert len(r_seen) == len(set(r_seen))
    assert set(r_seen) == set(
        Reminder.objects.filter(participant=world.people["BERLIN-001"]).values_list("pk", flat=True)
    ) | {r_page1[-1]}


# ----------------------------------------------------------------------------------------
# Ordering


@pytest.mark.django_db
def test_visits_are_listed_by_id_and_sites_by_code_as_the_views_declare(world: World) -> None:
    """Each list is in its view's `ordering` (DRF's CursorPagination read only the
    paginator's own, so SiteList's `("code",)` was dead code): sites and trials by code,
    visits by id, which never changes, so a visit booked or moved between two pages keeps
    its place (by day, it could be skipped or shown twice)."""
    version = world.trial.versions.get()
    early = participant_for(
        version, anchors={"day1": dt.date(2026, 1, 26)}, site=world.berlin, study_id="BERLIN-EARLY"
    )
    participant_enroll(
        participant=early, on=dt.date(2026, 1, 5), arm=Arm.objects.get(version=version, code="PBO")
    )
    aachen = SiteFactory.create(code="aachen", timezone="Europe/Berlin", country="DE")
    TrialSite.objects.get_or_create(trial=world.trial, site=aachen)

    visits = world.client("coordinator").get("/api/v1/visits/", {"page_size": 200}).json()
    days = [v["actual_date"] or v["booked_date"] or v["target_date"] for v in visits["results"]]
    sites = world.client("sponsor_monitor").get("/api/v1/sites/").json()["results"]

    ids = [v["id"] for v in visits["results"]]
    trials = world.client("sponsor_monitor").get("/api/v1/trials/").json()["results"]

    assert [s["code"] for s in sites] == ["aachen", "berlin", "tokyo"]
    assert [t["code"] for t in trials] == sorted(t["code"] for t in trials)
    assert ids == sorted(ids)
    assert days != sorted(days)  # the early participant's visits come after, by id


# ----------------------------------------------------------------------------------------
# Filters naming what the caller may not see


@pytest.mark.django_db
def test_other_sites_and_trials_look_exactly_like_ones_that_do_not_exist(world: World) -> None:
    tokyo = world.people["TOKYO-001"]
    osaka = world.people["OSAKA-001"]
    pairs = [
        ("/api/v1/visits/?site=tokyo", "/api/v1/visits/?site=nowhere"),
        ("/api/v1/visits/?site=osaka", "/api/v1/visits/?site=nowhere"),
        ("/api/v1/visits/?trial=tsukuba-early-anifrolumab", "/api/v1/visits/?trial=nope"),
        (f"/api/v1/visits/?participant={tokyo.pk}", "/api/v1/visits/?participant=999999"),
        (f"/api/v1/visits/?participant={osaka.pk}", "/api/v1/visits/?participant=999999"),
        ("/api/v1/participants/?site=tokyo", "/api/v1/participants/?site=nowhere"),
        (
            "/api/v1/participants/?trial=tsukuba-early-anifrolumab&site=osaka",
            "/api/v1/participants/?trial=nope&site=nowhere",
        ),
        ("/api/v1/sites/tokyo/calendar/", "/api/v1/sites/nowhere/calendar/"),
        ("/api/v1/sites/osaka/calendar/", "/api/v1/sites/nowhere/calendar/"),
        ("/api/v1/sites/tokyo/feeds/", "/api/v1/sites/nowhere/feeds/"),
        (f"/api/v1/participants/{tokyo.pk}/reminders/", "/api/v1/participants/999999/reminders/"),
        (
            f"/api/v1/visits/{world.visit('TOKYO-001').pk}/reminders/",
            "/api/v1/visits/999999/reminders/",
        ),
        (f"/api/v1/participants/{osaka.pk}/feeds/", "/api/v1/participants/999999/feeds/"),
    ]
    for role in ("coordinator", "site_system", "unblinded_pharmacist"):
        client = world.client(role)
        for hidden, missing in pairs:
            a, b = client.get(hidden), client.get(missing)
            assert (a.status_code, a["Content-Type"], a.content) == (
                b.status_code,
                b["Content-Type"],
                b.content,
            ), (role, hidden)
            assert a.status_code in (200, 404), (role, hidden)
            if a.status_code == 200:
                assert a.json()["results"] == []


@pytest.mark.django_db
def test_odd_filter_values_are_400s_naming_the_field_or_match_nothing(world: World) -> None:
    client = world.client("site_system")
    named = {
        "/api/v1/visits/?site=" + "x" * 41: (
            "site",
            "Ensure this field has no more than 40 characters.",
        ),
        "/api/v1/visits/?procedure=" + "ü" * 41: (
            "procedure",
            "Ensure this field has no more than 40 characters.",
        ),
        "/api/v1/visits/?site=a%00b": ("site", "Null characters are not allowed."),
        "/api/v1/participants/?trial=%00": ("trial", "Null characters are not allowed."),
        "/api/v1/visits/?status=": ("status", "This field may not be blank."),
        "/api/v1/participants/?status=planned": ("status", '"planned" is not a valid choice.'),
        "/api/v1/visits/?participant=1e3": ("participant", "A valid integer is required."),
        "/api/v1/sites/berlin/calendar/?from=2026-02-30": (
            "from",
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
        ),
    }
    for url, (field, message) in named.items():
        response = client.get(url)
        assert response.status_code == 400, (url, response.content)
        assert response["Content-Type"] == PROBLEM
        assert response.json()["errors"] == [{"field": field, "message": message}], url

    empty = [
        "/api/v1/visits/?site=" + "é" * 40,
        "/api/v1/visits/?site=%F0%9F%92%A9",
        "/api/v1/visits/?site=%FF%FE",  # not UTF-8
        "/api/v1/visits/?procedure=%C3%BC",
        "/api/v1/participants/?site=BERLIN",  # codes are case-sensitive
    ]
    for url in empty:
        response = client.get(url)
        assert response.status_code == 200, (url, response.content)
        assert response.json()["results"] == [], url
    # Surrounding blanks are trimmed (DRF CharField's trim_whitespace): " berlin " is berlin.
    padded = client.get("/api/v1/visits/?site=%20berlin%20").json()["results"]
    assert padded == client.get("/api/v1/visits/?site=berlin").json()["results"] != []


@pytest.mark.django_db
def test_repeated_and_unknown_parameters_are_400s_naming_them(world: World) -> None:
    """A typo such as `sites=` used to be ignored (the unfiltered list, no error), and of a
    repeated parameter only the last value counted: both are now a 400 naming it, on every
    list and every endpoint that reads a query string."""
    client = world.client("coordinator")
    berlin = client.get("/api/v1/visits/", {"site": "berlin"}).json()["results"]
    visit_filters = (
        "changed_since, cursor, format, from, page_size, participant, procedure, site, status, "
        "to, trial"
    )

    def refused(url: str) -> tuple[int, list[dict[str, str]]]:
        response = client.get(url)
        return response.status_code, response.json().get("errors", [])

    assert berlin
    assert refused("/api/v1/visits/?sites=tokyo") == (
        400,
        [
            {
                "field": "sites",
                "message": f"not a parameter of this endpoint, which takes: {visit_filters}",
            }
        ],
    )
    assert refused("/api/v1/visits/?site=tokyo&site=berlin") == (
        400,
        [{"field": "site", "message": "given more than once: give it once"}],
    )
    assert refused("/api/v1/sites/?ordering=-id") == (
        400,
        [
            {
                "field": "ordering",
                "message": "not a parameter of this endpoint, which takes: "
                "cursor, format, page_size",
            }
        ],
    )
    assert refused("/api/v1/sites/berlin/calendar/?from=2026-02-01&from=2026-03-01") == (
        400,
        [{"field": "from", "message": "given more than once: give it once"}],
    )
    # What each takes still works: filters, paging, DRF's format switch.
    assert (
        client.get("/api/v1/visits/?site=berlin&page_size=200&format=json").json()["results"]
        == berlin
    )


@pytest.mark.django_db
def test_next_links_keep_the_filters_exactly(world: World) -> None:
    _crowd(world, enrolled=4)
    client = world.client("coordinator")
    query = "site=berlin&status=planned%2Cbooked&from=2026-01-01&to=2027-12-31&procedure=LABS"
    whole = client.get(f"/api/v1/visits/?{query}&page_size=200").json()
    pages = _walk(client, f"/api/v1/visits/?{query}&page_size=3")

    assert [pk for page in pages for pk in page] == [row["id"] for row in whole["results"]]
    assert len(pages) > 2


# ----------------------------------------------------------------------------------------
# Blinded trials: no arm through any list, filter, ordering or error


@pytest.mark.django_db
def test_no_list_shows_a_blinded_arm_to_a_blinded_role_or_a_site_system(world: World) -> None:
    _crowd(world, enrolled=2)  # PBO next to BERLIN-001's ANI
    berlin = world.people["BERLIN-001"]
    urls = [
        *_lists(world).values(),
        "/api/v1/participants/?trial=niams-ani-vascular&site=berlin&arm=ANI",
        "/api/v1/participants/?arm=PBO",
        "/api/v1/participants/?ordering=arm",
        "/api/v1/visits/?arm=ANI&ordering=arm",
        "/api/v1/sites/berlin/calendar/?from=2026-02-01&to=2026-03-31",
        f"/api/v1/participants/{berlin.pk}/calendar/",
        "/api/v1/visits/?cursor=" + cursor("p=ANI"),
        "/api/v1/participants/?cursor=" + cursor("p=ANI"),
    ]
    arm_words = (b'"ANI"', b'"PBO"', b"Placebo", b"arm__code", b"treatmentassignment")
    for role in ("coordinator", "investigator", "sponsor_monitor", "site_system", "data_manager"):
        client = world.client(role)
        for url in urls:
            response = client.get(url)
            leaked = [w for w in arm_words if w in response.content]
            assert not leaked, (role, url, leaked)
            if url.startswith("/api/v1/participants/?") and response.status_code == 200:
                assert {p["arm"] for p in response.json()["results"]} <= {None}, (role, url)
        # No oracle either: filtering "by arm" gives the same rows for either arm.
        ani = client.get("/api/v1/participants/?arm=ANI").content
        assert ani == client.get("/api/v1/participants/?arm=PBO").content, role

    # The unblinded pharmacist sees the arms, at its own site only.
    seen = world.client("unblinded_pharmacist").get("/api/v1/participants/").json()["results"]
    assert {(p["site"], p["arm"]) for p in seen} == {("berlin", "ANI"), ("berlin", "PBO")}


# ----------------------------------------------------------------------------------------
# Query counts: 50 rows cost what 200 rows cost


@pytest.mark.django_db
def test_a_page_of_200_costs_the_queries_of_a_page_of_50(world: World) -> None:
    _crowd(world, enrolled=17, screening=200)
    # Tokyo and Osaka rows too, for the trial-wide monitor: several sites and zones per page.
    version = world.trial.versions.get()
    for n in range(2, 6):
        participant = participant_for(
            version, anchors={"day1": dt.date(2026, 2, 2)}, site=world.tokyo, study_id=f"TK-{n}"
        )
        participant_enroll(
            participant=participant,
            on=dt.date(2026, 1, 5),
            arm=Arm.objects.get(version=version, code="ANI"),
        )
    berlin = world.people["BERLIN-001"].pk
    cases = {
        ("coordinator", "/api/v1/visits/"): (50, 200),
        ("site_system", "/api/v1/visits/?site=berlin&procedure=LABS"): (10, 17),
        ("sponsor_monitor", "/api/v1/visits/"): (50, 200),
        ("unblinded_pharmacist", "/api/v1/visits/?status=planned"): (50, 200),
        ("coordinator", "/api/v1/participants/"): (50, 200),
        ("unblinded_pharmacist", "/api/v1/participants/"): (50, 200),
        ("sponsor_monitor", "/api/v1/participants/?status=enrolled"): (5, 22),
        ("site_system", f"/api/v1/participants/{berlin}/reminders/"): (10, 50),
        ("coordinator", f"/api/v1/participants/{berlin}/reminders/"): (10, 50),
    }
    observed = {}
    for (role, url), sizes in cases.items():
        counts = []
        for size in sizes:
            client = world.client(role)
            joiner = "&" if "?" in url else "?"
            with CaptureQueriesContext(connection) as queries:
                response = client.get(f"{url}{joiner}page_size={size}")
            assert response.status_code == 200, response.content
            assert len(response.json()["results"]) == size, (role, url, size)
            counts.append(len(queries))
        observed[(role, url)] = counts

    assert {k: v[0] for k, v in observed.items()} == {k: v[1] for k, v in observed.items()}


@pytest.mark.django_db
def test_a_page_size_of_thousands_of_digits_is_the_largest_page(world: World) -> None:
    """Python refuses int() of more than 4,300 digits: that was a 500. Any whole number past
    the largest page is the largest page."""
    client = world.client("coordinator")
    largest = client.get("/api/v1/visits/", {"page_size": "200"}).json()["results"]

    response = client.get("/api/v1/visits/", {"page_size": "9" * 5000})

    assert response.status_code == 200
    assert response.json()["results"] == largest
    # Leading zeros are the number's own: 0000005 is five.
    assert len(client.get("/api/v1/visits/", {"page_size": "0000005"}).json()["results"]) == 5
