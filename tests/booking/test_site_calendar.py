"""Site calendars in the database: validated in plain words, and read into the slot finder's
SiteCalendar with public holidays, in a fixed number of queries."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from scheduler.booking import site_calendar
from scheduler.engine.slots import Closure, Hours, OutOfService, Resource, StaffShift
from tests.booking.conftest import niams_calendar
from tests.factories import SiteFactory
from trials.models import (
    ResourceOutOfService,
    SiteClosure,
    SiteHours,
    SiteResource,
)
from trials.models import StaffShift as StaffShiftRow

D = dt.date
T = dt.time
pytestmark = pytest.mark.django_db


def test_the_niams_calendar_with_us_federal_holidays_and_a_manual_closure(
    niams_site, django_assert_num_queries
) -> None:
    SiteClosure.objects.create(site=niams_site, date=D(2026, 2, 20), reason="fire drill")
    scanner = SiteResource.objects.get(name="PET/CT 1")
    ResourceOutOfService.objects.create(
        resource=scanner,
        start=dt.datetime(2026, 2, 9, 13, tzinfo=dt.UTC),
        end=dt.datetime(2026, 2, 13, 22, tzinfo=dt.UTC),
        reason="detector service",
    )
    StaffShiftRow.objects.create(
        site=niams_site, kind="infusion nurse", weekday=0, start=T(8), end=T(16), count=2
    )
    with django_assert_num_queries(6):
        calendar = site_calendar(niams_site, D(2026, 2, 1), D(2026, 2, 28))
    weekdays = tuple(Hours(d, T(7, 30), T(17, 30)) for d in range(5))
    assert calendar.timezone == "America/New_York"
    assert calendar.hours == weekdays
    assert calendar.closures == (
        Closure(D(2026, 2, 16), "Washington's Birthday"),
        Closure(D(2026, 2, 20), "fire drill"),
    )
    assert calendar.resources == (
        Resource("CAVI device", "CAVI 1"),
        Resource(
            "PET/CT scanner",
            "PET/CT 1",
            hours=tuple(Hours(d, T(8), T(16)) for d in range(5)),
            out_of_service=(
                OutOfService(
                    dt.datetime(2026, 2, 9, 13, tzinfo=dt.UTC),
                    dt.datetime(2026, 2, 13, 22, tzinfo=dt.UTC),
                    "detector service",
                ),
            ),
        ),
        *(Resource("infusion chair", f"Chair {n}") for n in range(1, 5)),
    )
    assert calendar.staff == (StaffShift("infusion nurse", 0, T(8), T(16), 2),)


def test_the_query_count_does_not_grow_with_resources(django_assert_num_queries) -> None:
    site = niams_calendar(SiteFactory.create(code="big"))
    SiteResource.objects.bulk_create(
        SiteResource(site=site, kind="infusion chair", name=f"Extra {n}") for n in range(20)
    )
    with django_assert_num_queries(6):
        calendar = site_calendar(site, D(2026, 1, 1), D(2026, 12, 31))
    assert len(calendar.resources) == 26


def test_tsukuba_reads_japanese_holidays_and_a_maryland_site_its_state_ones() -> None:
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo", country="JP")
    calendar = site_calendar(site, D(2026, 5, 1), D(2026, 5, 7))
    assert [c.day for c in calendar.closures] == [
        D(2026, 5, 3),
        D(2026, 5, 4),
        D(2026, 5, 5),
        D(2026, 5, 6),
    ]
    with pytest.raises(ValidationError) as refused:
        SiteFactory.build(code="t2", timezone="Asia/Tokyo", country="JP", subdivision="08").clean()
    assert refused.value.message_dict == {
        "subdivision": [
            "'08' is not a subdivision of JP for public holidays; known: none: leave it empty"
        ]
    }
    maryland = SiteFactory.create(code="md", subdivision="MD")
    maryland.clean()
    md = site_calendar(maryland, D(2026, 11, 26), D(2026, 11, 27))
    days = {c.day: c.reason for c in md.closures}
    assert days == {
        D(2026, 11, 26): "Thanksgiving Day",
        D(2026, 11, 27): "American Indian Heritage Day",
    }


def test_calendar_rows_are_validated_in_plain_words(niams_site) -> None:
    with pytest.raises(ValidationError) as hours:
        SiteHours(site=niams_site, weekday=0, start=T(17), end=T(8)).full_clean()
    assert hours.value.message_dict == {"end": ["must end after it starts (17:00:00 to 08:00:00)"]}
    with pytest.raises(ValidationError) as capacity:
        SiteResource(site=niams_site, kind="chair", name="Chair 9", capacity=0).full_clean()
    assert capacity.value.message_dict == {"capacity": ["a resource holds at least 1 at once"]}
    with pytest.raises(ValidationError) as closure:
        SiteClosure(site=niams_site, date=D(2026, 3, 1), reason="  ").full_clean()
    assert closure.value.message_dict == {"reason": ["say why the site is closed that day"]}
    with pytest.raises(IntegrityError), transaction.atomic():
        SiteHours.objects.create(site=niams_site, weekday=0, start=T(17), end=T(8))


def test_a_country_without_known_holidays_is_refused_and_an_old_one_has_none(db) -> None:
    site = SiteFactory.build(code="nowhere", country="XQ")
    with pytest.raises(ValidationError) as unknown:
        site.full_clean()
    assert unknown.value.message_dict == {"country": ["no public holidays are known for 'XQ'"]}
    # A site stored before that check reads its own closures only: never an error page.
    site.save()
    SiteClosure.objects.create(site=site, date=D(2026, 12, 24), reason="staff day")
    calendar = site_calendar(site, D(2026, 12, 1), D(2026, 12, 31))
    assert [(c.day, c.reason) for c in calendar.closures] == [(D(2026, 12, 24), "staff day")]
