"""The visit list's filters (site-local dates), search, and its streamed CSV export: scoped
exactly like the list, arm-free for blinded roles (the world: tests/workspace/conftest.py)."""

from __future__ import annotations

import codecs
import csv
import gc
import inspect
import re
import weakref
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.db.models.signals import post_init
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from participants.models import TreatmentAssignment
from scheduler.admin import lists
from scheduler.admin.lists import visit_csv_rows
from scheduler.models import ScheduledVisit
from tests.conftest import sign_in
from tests.factories import member
from tests.workspace.conftest import NOW, World, staff
from tests.workspace.test_start_page import more_work

pytestmark = pytest.mark.django_db
VISITS = reverse("admin:scheduler_scheduledvisit_changelist")
EXPORT = reverse("admin:scheduler_scheduledvisit_export")
PARTICIPANTS = reverse("admin:participants_participant_changelist")


def listed(client: Any, query: str) -> list[str]:
    response = client.get(f"{VISITS}?{query}")
    assert response.status_code == 200, query
    return sorted(f"{v.participant.study_id} {v.code}" for v in response.context["cl"].result_list)


def exported(client: Any, query: str = "") -> list[list[str]]:
    response = client.get(f"{EXPORT}?{query}")
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    raw = b"".join(response.streaming_content)  # type: ignore[arg-type]
    assert raw.startswith(codecs.BOM_UTF8)  # for Excel: see visit_csv_rows
    text = raw.decode("utf-8-sig")
    return list(csv.reader(text.splitlines()))


@pytest.fixture
def logged_in(client: Any, coordinator: Any, now: None) -> Any:
    sign_in(client, coordinator)
    return client


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("booked=today", ["P-003 V1"]),
        ("booked=later", ["P-004 V1"]),
        ("booked=week", ["P-003 V1", "P-004 V1"]),
        ("window=closing_3&status__exact=planned", ["P-001 V3C"]),
        ("window=closed_14", ["P-001 V3"]),
        ("window=closed_60", ["P-001 V1", "P-001 V2", "P-001 V3"]),
        ("deviation=no_reason", ["P-001 V1"]),
        ("deviation=any", ["P-001 V1"]),
        ("resource=Infusion+chair&status__exact=missed", ["P-001 V3"]),
        ("procedure=CXR&status__exact=booked", ["P-002 V1", "P-003 V1", "P-004 V1"]),
        ("resource=X-ray+room&status__exact=done", ["P-001 V1"]),
    ],
)
def test_filters_list_exactly_their_rows(
    world: World, logged_in: Any, query: str, expected: list[str]
) -> None:
    assert listed(logged_in, query) == expected


def test_search_by_study_id(world: World, logged_in: Any) -> None:
    assert listed(logged_in, "q=P-004") == sorted(
        f"P-004 {v.code}" for v in ScheduledVisit.objects.filter(participant=world.p4)
    )
    assert listed(logged_in, "q=T-001") == []


def test_the_window_filter_counts_each_visit_from_its_own_sites_today(
    world: World, now: None, client: Any
) -> None:
    user = staff("both", trial=world.niams.trial, site=world.ny)
    member(user, trial=world.tsukuba_version.trial, site=world.tokyo)
    sign_in(client, user)
    # 16:00 UTC: 10 March in New York, already 11 March in Tokyo: each visit booked for its
    # own site's today.
    assert listed(client, "booked=today") == ["P-003 V1", "T-001 INF#1"]
    tokyo = exported(client, f"booked=today&participant__site__id__exact={world.tokyo.pk}")
    assert [(row[1], row[2], row[3], row[9]) for row in tokyo[1:]] == [
        ("tsukuba", "T-001", "INF#1", "Wed 11 Mar 2026 10:00 JST")
    ]


@pytest.mark.parametrize("bad", ["window=closing_x", "window=closing_9999", "booked=someday"])
def test_bad_filter_values_are_a_message_not_an_error(
    world: World, logged_in: Any, bad: str
) -> None:
    response = logged_in.get(f"{VISITS}?{bad}")
    assert (response.status_code, response["Location"]) == (302, f"{VISITS}?e=1")
    response = logged_in.get(f"{EXPORT}?{bad}", follow=True)
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        f"The list could not be exported: Unknown {bad.split('=')[0]} filter '{bad.split('=')[1]}'."
    ]


HEADER = [
    "trial",
    "site",
    "study id",
    "visit",
    "visit name",
    "status",
    "target date",
    "window start",
    "window end",
    "booked at (site-local)",
    "booked date",
    "done on",
    "deviation days",
    "procedures",
    "resources",
    "site time zone",
]


def test_the_export_is_the_filtered_list_streamed(world: World, logged_in: Any) -> None:
    rows = exported(logged_in, "booked=week&o=3")  # by target date

    assert rows == [
        HEADER,
        [
            "niams-ani-vascular",
            "nih-cc",
            "P-003",
            "V1",
            "Screening",
            "booked",
            "2026-03-10",
            "2026-03-03",
            "2026-03-17",
            "Tue 10 Mar 2026 14:00 EDT",
            "2026-03-10",
            "",
            "0",
            "EXAM LABS ECG CXR SLEQ",
            "X-ray room",
            "America/New_York",
        ],
        [
            "niams-ani-vascular",
            "nih-cc",
            "P-004",
            "V1",
            "Screening",
            "booked",
            "2026-03-14",
            "2026-03-07",
            "2026-03-21",
            "Fri 13 Mar 2026 09:30 EDT",
            "2026-03-13",
            "",
            "0",
            "EXAM LABS ECG CXR SLEQ",
            "X-ray room",
            "America/New_York",
        ],
    ]


def test_the_export_never_reads_a_contact_detail(world: World, logged_in: Any) -> None:
    """The file has no contact details, and the export does not even read them: of a
    participant it reads the study id, site and trial, nothing else."""
    with time_machine.travel(NOW, tick=False), CaptureQueriesContext(connection) as queries:
        rows = exported(logged_in, "")
    assert len(rows) > 1
    read = " ".join(query["sql"] for query in queries.captured_queries)
    participant_columns = set(re.findall(r'"participants_participant"\."(\w+)"', read))
    assert participant_columns == {"id", "trial_id", "site_id", "study_id"}


def test_the_list_links_to_the_export_of_exactly_what_it_shows(
    world: World, logged_in: Any
) -> None:
    page = logged_in.get(f"{VISITS}?booked=week&q=P-00").content.decode()
    assert (
        f'<a href="{EXPORT}?booked=week&amp;q=P-00" download>Download these 2 rows as CSV</a>'
        in page
    )


def test_the_export_is_a_generator_that_reads_nothing_until_sent(
    world: World, coordinator: Any, now: None
) -> None:
    lines = visit_csv_rows(ScheduledVisit.objects.none(), user=coordinator)
    assert inspect.isgenerator(lines)
    with CaptureQueriesContext(connection) as before_sending:
        lines = visit_csv_rows(ScheduledVisit.objects.all(), user=coordinator)
    assert len(before_sending) == 0
    assert next(lines).startswith("\ufefftrial,site,study id,")


def test_the_export_frees_each_chunk_of_rows_once_the_next_is_read(
    world: World, coordinator: Any, now: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the garbage collector off, a chunk's visits are gone (freed by reference counting
    alone) as soon as the next chunk is read: nothing read keeps a row alive through a
    reference cycle, so a large export holds one chunk, not every row it has sent. Rows are
    read two at a time here."""
    monkeypatch.setattr(lists, "EXPORT_CHUNK", 2)
    read: list[weakref.ref[ScheduledVisit]] = []

    def track(sender: type[ScheduledVisit], instance: ScheduledVisit, **kwargs: Any) -> None:
        read.append(weakref.ref(instance))

    visits = ScheduledVisit.objects.filter(participant__site=world.ny).order_by("target_date")
    expected = visits.count()
    lines = visit_csv_rows(visits, user=coordinator)
    sent = [next(lines)]  # the header
    first_chunk_alive: list[bool] = []
    gc.disable()
    post_init.connect(track, sender=ScheduledVisit)
    try:
        for line in lines:
            sent.append(line)
            if len(sent) == 4:  # two rows sent, the third read with the second chunk
                first_chunk_alive = [ref() is not None for ref in read[:2]]
    finally:
        post_init.disconnect(track, sender=ScheduledVisit)
        gc.enable()

    assert expected >= 6
    assert (len(sent) - 1, len(read)) == (expected, expected)
    assert first_chunk_alive == [False, False]
    assert [ref() for ref in read] == [None] * expected  # every one freed at the end


def test_another_sites_rows_never_appear_in_the_export(world: World, logged_in: Any) -> None:
    everything = exported(logged_in)
    asked_for_tokyo = exported(logged_in, f"participant__site__id__exact={world.tokyo.pk}")

    assert {row[1] for row in everything[1:]} == {"nih-cc"}
    assert len(everything) - 1 == ScheduledVisit.objects.filter(participant__site=world.ny).count()
    # A site the user does not work at is not even a choice of the filter: nothing changes.
    assert asked_for_tokyo == everything


def test_the_arm_is_exported_only_to_who_may_see_it(
    world: World, coordinator: Any, now: None, client: Any
) -> None:
    pharmacist = staff(
        "pharmacist", trial=world.niams.trial, site=world.ny, role="unblinded_pharmacist"
    )
    open_label = staff("tsukuba-coordinator", trial=world.tsukuba_version.trial, site=world.tokyo)
    arms = dict(TreatmentAssignment.objects.values_list("participant__study_id", "arm__code"))

    sign_in(client, coordinator)
    blinded = exported(client, "booked=week")
    sign_in(client, pharmacist)
    unblinded = exported(client, "booked=week")
    sign_in(client, open_label)
    open_trial = exported(client)

    assert blinded[0] == HEADER
    assert [row[-1] for row in blinded[1:]] == ["America/New_York"] * 2
    assert unblinded[0] == [*HEADER, "arm"]
    assert [(row[2], row[-1]) for row in unblinded[1:]] == [
        ("P-003", arms["P-003"]),
        ("P-004", arms["P-004"]),
    ]
    assert arms["P-003"] == "ANI" and arms["P-004"] == "PBO"
    # An open trial's arm is no secret; T-001 was enrolled without one.
    assert open_trial[0] == [*HEADER, "arm"]
    assert {row[-1] for row in open_trial[1:]} == {""}


def test_the_visit_list_and_its_export_cost_the_same_queries_at_two_sizes(
    world: World, coordinator: Any, builder: Any, client: Any
) -> None:
    sign_in(client, coordinator)

    def measure() -> tuple[int, int, int]:
        with time_machine.travel(NOW, tick=False):
            with CaptureQueriesContext(connection) as page:
                assert client.get(f"{VISITS}?window=open&procedure=CXR").status_code == 200
            with CaptureQueriesContext(connection) as export:
                exported(client, "window=open")
            with CaptureQueriesContext(connection) as participants:
                assert client.get(PARTICIPANTS).status_code == 200
        return len(page), len(export), len(participants)

    small = measure()
    more_work(world, builder)
    large = measure()

    assert small == large
