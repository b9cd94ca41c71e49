from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.utils.translation import gettext as _

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


def eligibility_failure_words(failure: EligibilityFailure) -> str:
    """A failed criterion in the reader's language: 'IC1 (Aged 18 to 75): age 17 years is
    outside the required range (≥ 18 and ≤ 75)'. The criterion's text stays as the protocol
    file writes it."""
    label = {"age_years": _("age"), "weight_kg": _("weight")}.get(failure.attribute, "")
    unit = {"age_years": _("years"), "weight_kg": _("kg")}.get(failure.attribute, "")
    words = {
        "label": label,
        "value": failure.value,
        "unit": unit,
        "range": failure.range.replace(" and ", _(" and ")),
    }
    if failure.problem == "missing":
        message = _("%(label)s is not recorded") % words
    elif failure.problem == "outside":
        message = _("%(label)s %(value)s %(unit)s is outside the required range (%(range)s)") % (
            words
        )
    elif failure.problem == "excluded":
        message = _("%(label)s %(value)s %(unit)s is in the excluded range (%(range)s)") % words
    else:
        message = failure.message
    return f"{failure.code} ({failure.text}): {message}"
