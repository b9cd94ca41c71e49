"""A NIAMS site with its calendar in the database: NIH Clinical Center hours 07:30-17:30 on
weekdays, 1 PET/CT scanner 08:00-16:00, 4 infusion chairs, 1 CAVI device; US federal holidays
come from the `holidays` package (Site.country)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.factories import SiteFactory
from trials.models import ResourceHours, Site, SiteHours, SiteResource

T = dt.time
SCANNER = "PET/CT scanner"


def niams_calendar(site: Site) -> Site:
    SiteHours.objects.bulk_create(
        SiteHours(site=site, weekday=d, start=T(7, 30), end=T(17, 30)) for d in range(5)
    )
    scanner = SiteResource.objects.create(site=site, kind=SCANNER, name="PET/CT 1")
    ResourceHours.objects.bulk_create(
        ResourceHours(resource=scanner, weekday=d, start=T(8), end=T(16)) for d in range(5)
    )
    SiteResource.objects.bulk_create(
        SiteResource(site=site, kind="infusion chair", name=f"Chair {n}") for n in range(1, 5)
    )
    SiteResource.objects.create(site=site, kind="CAVI device", name="CAVI 1")
    return site


@pytest.fixture
def niams_site(db: Any) -> Site:
    return niams_calendar(SiteFactory.create(code="nih-cc", name="NIH Clinical Center"))
