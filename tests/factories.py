from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import factory

from participants.models import Participant
from participants.services import participant_register
from trials.models import ProtocolVersion, Site, TrialSite


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ["code"]

    code = factory.Sequence(lambda n: f"site-{n}")
    name = factory.Sequence(lambda n: f"Site {n}")
    timezone = "America/New_York"
    country = "US"
    address = "10 Center Drive, Bethesda, MD 20892"
    phone = "+1 301-496-2563"


def participant_for(
    version: ProtocolVersion,
    *,
    anchors: dict[str, dt.date],
    birth_date: dt.date = dt.date(1980, 6, 15),
    weight_kg: Decimal | None = Decimal(60),
    site: Site | None = None,
    study_id: str | None = None,
    **fields: Any,
) -> Participant:
    """A participant in screening on `version`, at a site that runs its trial."""
    at_site: Site = site or SiteFactory.create()
    TrialSite.objects.get_or_create(trial=version.trial, site=at_site)
    return participant_register(
        trial=version.trial,
        site=at_site,
        study_id=study_id or f"P-{Participant.objects.count() + 1:03d}",
        birth_date=birth_date,
        anchors=anchors,
        weight_kg=weight_kg,
        protocol_version=version,
        **fields,
    )
