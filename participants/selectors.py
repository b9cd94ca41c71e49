from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch
from django.utils.translation import gettext as _

from participants.models import Participant
from trials.eligibility import EligibilityFailure, RangeCheck, age_in_years, check_eligibility
from trials.models import EligibilityCriterion


def participant_anchor_dates(*, participant: Participant) -> dict[str, dt.date]:
    return {anchor.code: anchor.date for anchor in participant.anchors.all()}


# Where a list of participants put their versions' machine-checkable criteria, read for the
# whole page at once (`machine_criteria_prefetch`).
MACHINE_CRITERIA = "machine_criteria"


def machine_criteria_prefetch() -> Prefetch[Any]:
    """A `prefetch_related` lookup giving each participant's version its machine-checkable
    criteria, in their order, for `participant_eligibility_failures` to read without a query
    (one query for a page of participants instead of one a row)."""
    return Prefetch(
        "protocol_version__eligibilitycriterion_set",
        queryset=EligibilityCriterion.objects.exclude(check_attribute="").order_by("order"),
        to_attr=MACHINE_CRITERIA,
    )


def _machine_criteria(participant: Participant) -> list[EligibilityCriterion]:
    # Only from a version already read: reading it here would cost the query saved.
    if Participant._meta.get_field("protocol_version").is_cached(participant):
        prefetched = getattr(participant.protocol_version, MACHINE_CRITERIA, None)
        if prefetched is not None:
            return list(prefetched)
    return list(
        EligibilityCriterion.objects.filter(version=participant.protocol_version_id)
        .exclude(check_attribute="")
        .order_by("order")
    )


def participant_eligibility_failures(
    *, participant: Participant, on: dt.date
) -> list[EligibilityFailure]:
    """Machine-checkable criteria of the participant's protocol version that fail on `on`
    (those `machine_criteria_prefetch` read, if a list did)."""
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
        for c in _machine_criteria(participant)
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
