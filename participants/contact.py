"""Whether a participant's invites and reminders can reach anyone.

Invites go by email to the participant, or to the guardian while the participant is a minor;
reminders go by email or SMS (a minor's SMS to the guardian's phone when there is one). With
neither an address the invites can use nor a phone number, nothing reaches the participant,
and nothing says so unless the coordinator is told.
"""

from __future__ import annotations

import datetime as dt

from participants.models import Participant
from trials.eligibility import age_in_years

# Under this age invites go to the guardian (the same rule as the invites' attendee).
ADULT_AGE = 18
ACTIVE = (Participant.Status.SCREENING, Participant.Status.ENROLLED)


def _is_minor(participant: Participant, today: dt.date) -> bool:
    return age_in_years(participant.birth_date, today) < ADULT_AGE


GUARDIAN_EMAIL = "guardian email address (a minor's invites go to the guardian)"


def sms_number(participant: Participant, *, today: dt.date) -> str:
    """Where the participant's SMS go: the guardian's phone while the participant is a minor
    and the site has it, else the participant's own phone ("" when there is none). `today` is
    the participant's own date, as for invites."""
    if participant.guardian_phone and _is_minor(participant, today):
        return participant.guardian_phone
    return participant.phone


def participant_contact_gap(participant: Participant, *, today: dt.date) -> str | None:
    """Why invites and reminders reach nobody, in plain words; None when they can reach the
    participant (or the participant has left the study, when nothing is sent anyway).

    `today` is the participant's own date: it decides whether they are still a minor.
    """
    if participant.status not in ACTIVE or sms_number(participant, today=today):
        return None
    minor = _is_minor(participant, today)
    if participant.guardian_email if minor else participant.email:
        return None
    missing = GUARDIAN_EMAIL if minor else "email address"
    return (
        f"{participant} has no {missing} and no phone number: invites and reminders are not sent."
    )


def contact_cleared_warning(participant: Participant, *, today: dt.date) -> str:
    """What a coordinator is told when their edit removed the last way to reach someone."""
    needed = f"a {GUARDIAN_EMAIL}" if _is_minor(participant, today) else "an email address"
    return (
        f"The last contact channel of {participant} was cleared: invites and reminders will "
        f"stop until {needed} or a phone number is added."
    )
