from __future__ import annotations

import datetime as dt
from decimal import Decimal

from participants.models import Participant
from trials.eligibility import EligibilityFailure, RangeCheck, age_in_years, check_eligibility
from trials.models import EligibilityCriterion


def participant_anchor_dates(*, participant: Participant) -> dict[str, dt.date]:
    return {anchor.code: anchor.date for anchor in participant.anchors.all()}


def participant_eligibility_failures(
    *, participant: Participant, on: dt.date
) -> list[EligibilityFailure]:
    """Machine-checkable criteria of the participant's protocol version that fail on `on`."""
    checks = [
        RangeCheck(
            code=c.code,
            kind=c.kind,
            text=c.text,
            attribute=c.check_attribute,
            min=c.check_min,
            max=c.check_max,
            min_inclusive=c.check_min_inclusive,
            max_inclusive=c.check_max_inclusive,
        )
        for c in EligibilityCriterion.objects.filter(version=participant.protocol_version_id)
        .exclude(check_attribute="")
        .order_by("order")
    ]
    attributes: dict[str, Decimal | None] = {
        "age_years": Decimal(age_in_years(participant.birth_date, on)),
        "weight_kg": participant.weight_kg,
    }
    return check_eligibility(checks, attributes)
