from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import time_machine
from django.db import connection

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.selectors import (
    participants_with_visit_status,
    rows_streamed,
    sites_with_visit_status,
    zones_by_today,
)
from scheduler.services import (
    participant_enroll,
    visit_book,
    visit_mark_missed,
    visit_record_done,
)
from tests.conftest import seed_path
from tests.factories import SiteFactory, participant_for
from trials.models import Site

D = dt.date
# 31 March at the site (New York, 08:00): the counts are taken from each site's today.
NOW = dt.datetime(2026, 3, 31, 12, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db

COUNTS = ("due", "booked", "done", "missed", "out_of_window", "overdue")


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def counts(row) -> dict[str, int]:
    return {key: getattr(row, f"visits_{key}") for key in COUNTS}


def enrolled(version, site, study_id: str) -> Participant:
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 2)}, site=site, study_id=study_id
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


def at(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )


def test_status_counts_per_participant_and_per_site(import_seed, django_user_model) -> None:
    by = django_user_model.objects.create_user("coordinator")
    version = import_seed("000")
    site = SiteFactory.create(code="nih")
    busy, quiet = enrolled(version, site, "P-001"), enrolled(version, site, "P-002")
    # NIAMS from Day 1 = 2026-02-02; today 2026-03-31: V4's window (03-27..04-02) is open.
    visit_record_done(visit=at(busy, "V1"), actual_date=D(2026, 1, 12), by=by)
    visit_record_done(visit=at(busy, "V2"), actual_date=D(2026, 2, 2), by=by)
    visit_record_done(visit=at(busy, "V3"), actual_date=D(2026, 3, 8), by=by, reason="flu")
    visit_mark_missed(visit=at(busy, "V3C"), by=by, reason="no answer")
    visit_book(visit=at(busy, "V5"), local_date=D(2026, 4, 27), local_time=dt.time(9), by=by)

    rows = {
        p.study_id: counts(p)
        for p in participants_with_visit_status(queryset=Participant.objects.all())
    }

    assert rows == {
        # V4 due; V5 booked; V1, V2, V3 done (V3 3 days late); V3C missed.
        "P-001": {"due": 1, "booked": 1, "done": 3, "missed": 1, "out_of_window": 1, "overdue": 0},
        # Nothing recorded: V1, V2, V3, V3C overdue, V4 due.
        "P-002": {"due": 1, "booked": 0, "done": 0, "missed": 0, "out_of_window": 0, "overdue": 4},
    }
    assert [counts(s) for s in sites_with_visit_status(queryset=Site.objects.all())] == [
        {"due": 2, "booked": 1, "done": 3, "missed": 1, "out_of_window": 1, "overdue": 4}
    ]
    quiet.refresh_from_db()
    assert quiet.status == "enrolled"


def test_status_counts_take_one_query_whatever_the_number_of_participants(
    import_seed, django_assert_num_queries
) -> None:
    version = import_seed("000")
    site = SiteFactory.create(code="nih")
    enrolled(version, site, "P-001")
    with django_assert_num_queries(1):
        assert len(list(participants_with_visit_status(queryset=Participant.objects.all()))) == 1
    for number in range(2, 6):
        enrolled(version, site, f"P-{number:03d}")
    with django_assert_num_queries(1):
        assert len(list(participants_with_visit_status(queryset=Participant.objects.all()))) == 5


@pytest.mark.parametrize(
    ("moment", "dates"),
    [
        # Tokyo is on the 8th, New York and UTC on the 7th.
        (dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.UTC), [D(2026, 12, 7), D(2026, 12, 8)]),
        # Kiritimati (+14) is on the 8th while Pago Pago (-11) is still on the 6th.
        (
            dt.datetime(2026, 12, 7, 10, 30, tzinfo=dt.UTC),
            [D(2026, 12, 6), D(2026, 12, 7), D(2026, 12, 8)],
        ),
    ],
)
def test_zones_by_today_puts_every_zone_in_exactly_one_group_of_its_own_date(moment, dates) -> None:
    groups = zones_by_today(now=moment)

    assert sorted(today for today, _ in groups) == dates
    every = [zone for _, zones in groups for zone in zones]
    assert sorted(every) == sorted(zoneinfo.available_timezones())
    assert all(
        moment.astimezone(zoneinfo.ZoneInfo(zone)).date() == today
        for today, zones in groups
        for zone in zones
    )


def test_a_published_versions_snapshot_is_built_once_and_a_drafts_every_time(
    import_seed, django_assert_num_queries
) -> None:
    from scheduler import selectors
    from trials.models import ProtocolVersion, VisitDefinition
    from trials.services import protocol_import, protocol_version_publish

    published = import_seed("000")
    first = selectors.protocol_snapshot(version=published)
    # Another instance of the same row (the next request's): no query, the same object.
    again = ProtocolVersion.objects.get(pk=published.pk)
    with django_assert_num_queries(0):
        assert selectors.protocol_snapshot(version=again) is first
    assert [v.code for v in first.visits][:3] == ["V1", "V2", "V3"]

    # A draft can still change: read afresh every time.
    text = (
        seed_path("001").read_text(encoding="utf-8").replace("status: published", "status: draft")
    )
    draft = protocol_import(text=text, source="draft.yaml")
    before = selectors.protocol_snapshot(version=draft)
    code = before.visits[0].code
    VisitDefinition.objects.filter(version=draft, code=code).update(offset_days=-99)
    after = selectors.protocol_snapshot(version=draft)
    assert after is not before
    assert after.visits[0].offset_days == -99

    # Published, it is cached from then on, under its publication.
    published_draft = protocol_version_publish(version=draft)
    snapshot = selectors.protocol_snapshot(version=published_draft)
    assert snapshot.visits[0].offset_days == -99
    with django_assert_num_queries(0):
        assert selectors.protocol_snapshot(version=published_draft) is snapshot


def test_the_published_snapshot_cache_is_bounded(import_seed, monkeypatch) -> None:
    from scheduler import selectors

    monkeypatch.setattr(selectors, "PUBLISHED_SNAPSHOTS_MAX", 1)
    monkeypatch.setattr(selectors, "_published_snapshots", {})
    niams, tsukuba = import_seed("000"), import_seed("001")
    selectors.protocol_snapshot(version=niams)
    selectors.protocol_snapshot(version=tsukuba)
    assert [key[0] for key in selectors._published_snapshots] == [tsukuba.pk]


def test_a_published_versions_catalog_is_read_once_and_a_drafts_every_time(
    import_seed, django_assert_num_queries
) -> None:
    from scheduler import selectors
    from trials.models import ProtocolVersion, VisitDefinition
    from trials.services import protocol_import

    published = import_seed("000")
    with django_assert_num_queries(3):
        visits, procedures, rules = selectors.protocol_catalog(version=published)
    assert sorted(visits) == [f"V{n}" for n in (1, 10, 11, 2, 3)] + ["V3C"] + [
        f"V{n}" for n in range(4, 10)
    ]
    assert sorted(procedures) == [
        "CAVI", "CXR", "ECG", "EXAM", "FDGPET", "INFUSION", "LABS", "SLEQ"
    ]  # fmt: skip
    assert sorted(rules) == ["CONTRACEPTION_END"]
    with django_assert_num_queries(0):  # each joined with its version
        assert {d.version.pk for d in [*visits.values(), *rules.values()]} == {published.pk}
    # Another instance of the same row (the next request's): no query, the same rows.
    again = ProtocolVersion.objects.get(pk=published.pk)
    with django_assert_num_queries(0):
        assert selectors.protocol_catalog(version=again)[0]["V1"] is visits["V1"]

    text = (
        seed_path("001").read_text(encoding="utf-8").replace("status: published", "status: draft")
    )
    draft = protocol_import(text=text, source="draft.yaml")
    before = selectors.protocol_catalog(version=draft)[0]["INF"]
    VisitDefinition.objects.filter(version=draft, code="INF").update(offset_days=-99)
    with django_assert_num_queries(3):
        after = selectors.protocol_catalog(version=draft)[0]["INF"]
    assert (before.offset_days, after.offset_days) == (0, -99)


def test_a_calendar_of_the_version_given_reads_no_definitions(
    import_seed, django_assert_num_queries
) -> None:
    """Re-planning one participant reads their calendar in five queries: the definitions and
    rules its rows name come from the version's catalog, joined with their version."""
    from scheduler.calendar import stored_calendars
    from scheduler.selectors import protocol_catalog

    version = import_seed("001")
    participant = participant_for(
        version,
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
        site=SiteFactory.create(),
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    catalog = protocol_catalog(version=version)
    with django_assert_num_queries(5):
        stored = stored_calendars([participant], versions=[version])[participant.pk]
    with django_assert_num_queries(0):
        definitions = [v.visit_definition for v in stored.visits]
        assert all(d is catalog[0]["INF"] for d in definitions)
        assert [(d.code, d.version.label) for d in definitions if d is not None][:2] == [
            ("INF", "1.0"),
            ("INF", "1.0"),
        ]
        assert {m.rule.code for m in stored.milestones} == {
            "PRIMARY_LLDAS",
            "PSL_TAPER",
            "SECONDARY_W24",
        }
    # Without the version, its definitions and rules, and their version, are read: two rows
    # each, not one joined copy per visit.
    with django_assert_num_queries(8):
        stored = stored_calendars([participant])[participant.pk]
    with django_assert_num_queries(0):
        assert len({id(v.visit_definition) for v in stored.visits}) == 1
        read = stored.visits[0].visit_definition
        assert read is not None and read.version.label == "1.0"


def _cursor_tuple_fraction() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW cursor_tuple_fraction")
        return str(cursor.fetchone()[0])


@pytest.mark.parametrize("stop_after", [None, 3])
def test_rows_streamed_reads_every_row_planned_for_reading_all(stop_after: int | None) -> None:
    """A feed or an export reads every row: on Postgres its cursor is planned for that
    (cursor_tuple_fraction 1, not the 0.1 that favours a quick first row), and the
    connection's setting is back once the reader is done, or gives up part of the way."""
    codes = [f"site-{n:02d}" for n in range(7)]
    for code in codes:
        SiteFactory(code=code)
    postgres = connection.vendor == "postgresql"
    default = _cursor_tuple_fraction() if postgres else None

    rows = rows_streamed(
        Site.objects.filter(code__in=codes).order_by("code").values_list("code", flat=True),
        chunk_size=2,
    )
    read = []
    for code in rows:
        read.append(code)
        if postgres:
            assert _cursor_tuple_fraction() == "1"
        if len(read) == stop_after:
            break
    rows.close()  # what a streamed response does with its iterator when it ends

    assert read == codes[:stop_after]
    if postgres:
        assert default == "0.1"
        assert _cursor_tuple_fraction() == default
