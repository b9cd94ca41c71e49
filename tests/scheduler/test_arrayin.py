"""`__in` with a list is one array parameter on Postgres (`scheduler.arrayin`), and finds
exactly the rows Django's `IN (…)` finds, on every database.

runs on: SQLite in `make test` on a laptop (Django's own `IN`), Postgres in CI (the array).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import F, Q
from django.test.utils import CaptureQueriesContext

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll
from tests.factories import SiteFactory, participant_for
from trials.models import Site

pytestmark = pytest.mark.django_db
D = dt.date


@pytest.fixture
def calendar(import_seed: Any) -> list[ScheduledVisit]:
    """Two NIAMS participants' visits (24), one of them booked."""
    version = import_seed("000")
    for n, day1 in enumerate((D(2026, 3, 2), D(2026, 3, 9))):
        participant = participant_for(
            version, anchors={"day1": day1}, study_id=f"N-{n}", weight_kg=Decimal("61.5")
        )
        participant_enroll(participant=participant, on=D(2026, 2, 1))
    visits = list(ScheduledVisit.objects.order_by("id"))
    visits[3].booked_date = D(2026, 4, 1)
    visits[3].save(update_fields=["booked_date"])
    return list(ScheduledVisit.objects.order_by("id"))


def the_array(sql: str) -> bool:
    return "= ANY(CAST(" in sql


# Each case: a query with `__in`, and which of the calendar's visits it must find, by a plain
# Python test of each visit.
CASES: dict[str, tuple[Callable[[list[ScheduledVisit]], Q], Callable[..., bool], bool]] = {
    "keys, with None and repeats": (
        lambda v: Q(pk__in=[v[0].pk, None, v[5].pk, v[5].pk, 10**12]),
        lambda visit, v: visit.pk in (v[0].pk, v[5].pk),
        True,
    ),
    "foreign key, by instance": (
        lambda v: Q(participant__in=[v[0].participant]),
        lambda visit, v: visit.participant_id == v[0].participant_id,
        True,
    ),
    "foreign key, by key as text": (
        lambda v: Q(visit_definition__in=[str(v[1].visit_definition_id)]),
        lambda visit, v: visit.visit_definition_id == v[1].visit_definition_id,
        True,
    ),
    "dates": (
        lambda v: Q(target_date__in=[v[2].target_date, v[13].target_date]),
        lambda visit, v: visit.target_date in (v[2].target_date, v[13].target_date),
        True,
    ),
    "text, across a join": (
        lambda v: Q(visit_definition__code__in=["V1", "V3", "V99"]),
        lambda visit, v: visit.visit_definition.code in ("V1", "V3"),
        True,
    ),
    "excluded, with nulls in the column": (
        lambda v: ~Q(booked_date__in=[D(2026, 4, 1)]),
        lambda visit, v: visit.booked_date != D(2026, 4, 1),
        True,
    ),
    "a subquery stays a subquery": (
        lambda v: Q(participant__in=Participant.objects.filter(study_id="N-1")),
        lambda visit, v: visit.participant.study_id == "N-1",
        False,
    ),
    "an expression in the list stays IN": (
        lambda v: Q(occurrence__in=[F("occurrence"), 99]),
        lambda visit, v: True,
        False,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_in_finds_what_django_in_finds(calendar: list[ScheduledVisit], case: str) -> None:
    condition, expected, as_array = CASES[case]
    query = condition(calendar)
    with CaptureQueriesContext(connection) as queries:
        found = list(ScheduledVisit.objects.filter(query).order_by("id"))
    assert [visit.pk for visit in found] == [
        visit.pk for visit in calendar if expected(visit, calendar)
    ]
    assert found  # every case finds something
    (statement,) = queries.captured_queries
    assert the_array(statement["sql"]) == (as_array and connection.vendor == "postgresql")


def test_text_longer_than_its_column_never_matches_cut(db: None) -> None:
    """A cast to varchar(40) would cut a 41-character value to an existing 40-character code;
    the array is text, so it matches nothing, as `IN` does."""
    SiteFactory.create(code="s" * 40)
    with CaptureQueriesContext(connection) as queries:
        assert not Site.objects.filter(code__in=["s" * 41]).exists()
    assert Site.objects.filter(code__in=["s" * 40, "other"]).count() == 1
    assert the_array(queries.captured_queries[0]["sql"]) == (connection.vendor == "postgresql")


def test_an_empty_list_or_only_none_matches_nothing_without_a_query(db: None) -> None:
    SiteFactory.create()
    with CaptureQueriesContext(connection) as queries:
        assert list(Site.objects.filter(pk__in=[])) == []
        assert list(Site.objects.filter(pk__in=[None])) == []
    assert queries.captured_queries == []
    assert Site.objects.exclude(pk__in=[]).count() == 1


def test_thousands_of_keys_are_one_parameter_on_postgres(calendar: list[ScheduledVisit]) -> None:
    keys = [visit.pk for visit in calendar] + list(range(10**9, 10**9 + 5000))
    with CaptureQueriesContext(connection) as queries:
        assert ScheduledVisit.objects.filter(pk__in=keys).count() == len(calendar)
    sql = queries.captured_queries[0]["sql"]
    if connection.vendor == "postgresql":
        assert the_array(sql)
        assert sql.count(", ") < 20  # the keys are in one array, not a placeholder each
    else:
        assert sql.count(", ") >= len(keys) - 1


def test_decimals_keep_djangos_in(calendar: list[ScheduledVisit]) -> None:
    """A type not cast to an array keeps Django's own `IN`, with the same result."""
    with CaptureQueriesContext(connection) as queries:
        assert Participant.objects.filter(weight_kg__in=[Decimal("61.5")]).count() == 2
    assert not the_array(queries.captured_queries[0]["sql"])


def test_awkward_text_is_matched_exactly(db: None) -> None:
    """Values an array literal must quote (commas, quotes, braces, backslashes, the word
    NULL, an empty string, non-Latin text) match themselves and nothing else."""
    awkward = ["a,b", 'x"y', "it's", "{z}", "back\\slash", "NULL", "", "東京 1", " padded "]
    for n, name in enumerate(awkward):
        SiteFactory.create(name=name, code=f"awkward-{n}")
    SiteFactory.create(name="a", code="plain-a")
    SiteFactory.create(name="NULL2", code="plain-null")
    for name in awkward:
        assert list(Site.objects.filter(name__in=[name]).values_list("name", flat=True)) == [name]
    found = Site.objects.filter(name__in=awkward).order_by("code")
    assert list(found.values_list("name", flat=True)) == awkward


def test_keys_no_bigint_holds_match_nothing_as_in_does(calendar: list[ScheduledVisit]) -> None:
    """Postgres's `IN (…)` finds no row for 10**20; a cast to bigint[] would refuse the whole
    statement (a server error for an id typed too long), so such values are left out of the
    array. (SQLite's driver refuses an integer over 64 bits before any SQL, Django's own `IN`
    included, so there is nothing to compare there.)"""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's driver refuses integers over 64 bits with or without arrayin")
    v = calendar
    huge = [10**20, -(10**20), "99999999999999999999"]
    with CaptureQueriesContext(connection) as queries:
        assert list(ScheduledVisit.objects.filter(pk__in=huge)) == []
        assert [x.pk for x in ScheduledVisit.objects.filter(pk__in=[*huge, v[2].pk])] == [v[2].pk]
        assert ScheduledVisit.objects.exclude(participant__in=[2**64]).count() == len(v)
        assert ScheduledVisit.objects.filter(occurrence__in=[1, 2**70]).count() == sum(
            1 for visit in v if visit.occurrence == 1
        )
    # The first matches nothing without a query, the exclusion of nothing is no condition,
    # the other two are one array each.
    assert [the_array(q["sql"]) for q in queries.captured_queries] == [True, False, True]
