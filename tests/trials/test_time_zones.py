"""Time zone names: every IANA zone is accepted, anything else refused with the reason, and
the list of zones is read from the time zone database once per process, not per check."""

from __future__ import annotations

import zoneinfo

import pytest
from django.core.exceptions import ValidationError

from trials import models
from trials.models import iana_zones, validate_timezone


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "Asia/Tokyo", "America/St_Johns", "Australia/Lord_Howe", "UTC"]
)
def test_every_iana_zone_is_accepted(zone: str) -> None:
    validate_timezone(zone)


@pytest.mark.parametrize(
    "value", ["", "Berlin", "europe/berlin", "Europe/Berlin ", "CET+1", "../../etc/passwd"]
)
def test_anything_else_is_refused_with_an_example(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate_timezone(value)

    assert refused.value.messages == [f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)."]


def test_the_zones_are_those_of_the_time_zone_database() -> None:
    assert iana_zones() == zoneinfo.available_timezones()


def test_checking_a_zone_does_not_read_the_database_of_zones_again(monkeypatch) -> None:
    iana_zones()  # read once, as the first check in a process does
    listed: list[None] = []

    def listing() -> set[str]:
        listed.append(None)
        return set()

    monkeypatch.setattr(models.zoneinfo, "available_timezones", listing)
    for zone in ("Europe/Berlin", "Asia/Tokyo", "Europe/Berlin"):
        validate_timezone(zone)

    assert listed == []
