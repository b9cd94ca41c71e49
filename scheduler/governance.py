"""Services that govern a trial rather than a calendar: its blinding, who works on it.

Each is one use case in one transaction, audited with who and why, like the calendar services
in scheduler/services.py.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import translation
from django.utils.translation import gettext as _

from participants.models import Participant, TreatmentAssignment
from scheduler import access
from scheduler.calendars.events import UID_DOMAIN, participant_label
from scheduler.display import site_time
from scheduler.models import EmergencyUnblinding, UnblindingNotice, UserPreference
from trials.models import Arm, Trial
from trials.protocol_file import Blinding

logger = logging.getLogger(__name__)


class GovernanceError(ValueError):
    """A change to a trial's governance that is refused, in words a person can act on."""


@transaction.atomic
def trial_blinding_change(*, trial: Trial, blinding: str, reason: str, by: Any) -> Trial:
    """Change a trial's blinding (unblinding it, typically at database lock).

    Only an unblinded role of the trial who also governs trials may do it (the blinding is
    every site's; `access.can_change_blinding`), and only with a reason; the change is in the
    trial's audit trail with both. Everything that shows arms asks access.py, so from the commit
    on the arm shows where the new blinding allows it.
    """
    if blinding not in {b.value for b in Blinding}:
        raise GovernanceError(
            _("'%(blinding)s' is not a blinding; expected one of: %(choices)s")
            % {"blinding": blinding, "choices": ", ".join(b.value for b in Blinding)}
        )
    if not access.can_change_blinding(by, trial=trial):
        raise GovernanceError(
            _(
                "changing the blinding of %(trial)s needs the unblinded pharmacist role in it "
                "and the permission to govern trials (%(permission)s): it changes what every "
                "site sees"
            )
            % {"trial": trial.code, "permission": access.GOVERN_TRIALS}
        )
    if not reason.strip():
        raise GovernanceError(_("a reason is required to change a trial's blinding"))
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    if trial.blinding == blinding:
        raise GovernanceError(
            _("%(trial)s is already %(blinding)s") % {"trial": trial.code, "blinding": blinding}
        )
    if blinding != Blinding.OPEN:
        # The importer's rule for a blinded trial's file (trials.protocol_file): a visit only
        # some arms have would appear in those arms' calendars alone, and every calendar,
        # invite, feed and list would show the arm.
        limited = _arm_limited_visit(trial)
        if limited is not None:
            raise GovernanceError(
                _(
                    "visit %(visit)s of version %(version)s is limited to arm(s) %(arms)s, "
                    "which would show the arm in every calendar of a %(blinding)s-blind "
                    "trial; give it to every arm in a new version first"
                )
                % {**limited, "blinding": blinding}
            )
    trial.blinding = blinding
    trial._history_user = by  # type: ignore[attr-defined]
    trial._change_reason = reason.strip()  # type: ignore[attr-defined]
    trial.save(update_fields=["blinding"])
    return trial


def _arm_limited_visit(trial: Trial) -> dict[str, str] | None:
    """A visit of any version of `trial` that only some of its version's arms have, if any."""
    for version in trial.versions.order_by("id"):
        arms = set(version.arm_set.values_list("code", flat=True))
        for visit in version.visitdefinition_set.prefetch_related("arms").order_by("order"):
            codes = sorted(arm.code for arm in visit.arms.all())
            if codes and set(codes) != arms:
                return {"visit": visit.code, "version": version.label, "arms": ", ".join(codes)}
    return None


# ----------------------------------------------------------------------------------------
# Emergency unblinding


class Unblinded(NamedTuple):
    """What an emergency unblinding reveals (the arm of one participant) and its audit entry."""

    arm: Arm
    entry: EmergencyUnblinding


def unblinding_refusal(kind: str) -> str:
    """The words of each refusal, for the admin form and the tests."""
    return {
        "role": _(
            "Only the participant's site investigator or unblinded pharmacist may unblind "
            "in an emergency."
        ),
        "open": _("This trial is not blinded: there is no code to break."),
        "unassigned": _("This participant has no treatment assignment: there is no arm to show."),
        "no_password": _("Re-enter your password to unblind: nothing was unblinded."),
        "wrong_password": _("That is not your password: nothing was unblinded."),
        "no_reason": _("Give the reason for the emergency unblinding: nothing was unblinded."),
    }[kind]


def _refused(kind: str, participant: Participant, by: Any) -> GovernanceError:
    # A refused attempt is logged (who, which participant row, why refused), never the reason
    # typed or the arm; nothing is written to the database.
    logger.warning(
        "emergency unblinding refused (%s): user %s, participant %s",
        kind,
        getattr(by, "pk", None),
        participant.pk,
    )
    return GovernanceError(unblinding_refusal(kind))


@transaction.atomic
def participant_emergency_unblind(
    *, participant: Participant, by: Any, password: str, reason: str
) -> Unblinded:
    """Break the code of one participant of a blinded trial in an emergency.

    Only the participant's site investigator or unblinded pharmacist (access.py), only after
    re-entering their password and with a reason. Writes one EmergencyUnblinding (who, whom,
    why, when; never the arm) and one notice to each of the trial's unblinded contacts, in
    the app and by email after commit (who unblinded which study id and why; never the arm).
    Returns that participant's arm and the entry. A refusal writes nothing.
    """
    participant = Participant.objects.select_related("trial", "site").get(pk=participant.pk)
    trial = participant.trial
    if not access.can_emergency_unblind(by, trial_id=trial.pk, site_id=participant.site_id):
        raise _refused("role", participant, by)
    if not trial.is_blinded:
        raise _refused("open", participant, by)
    assignment = (
        TreatmentAssignment.objects.select_related("arm").filter(participant=participant).first()
    )
    if assignment is None:
        raise _refused("unassigned", participant, by)
    if not password:
        raise _refused("no_password", participant, by)
    if not by.check_password(password):
        raise _refused("wrong_password", participant, by)
    reason = reason.strip()
    if not reason:
        raise _refused("no_reason", participant, by)

    entry = EmergencyUnblinding.objects.create(participant=participant, user=by, reason=reason)
    contacts = list(access.unblinded_contacts(trial))
    languages = _languages(contacts)
    notices = []
    for contact in contacts:
        # In the recipient's own language (the admin's language switch), else the default.
        with translation.override(languages.get(contact.pk, settings.LANGUAGE_CODE)):
            text = unblinding_notice_text(entry)
        notices.append(
            UnblindingNotice.objects.create(unblinding=entry, recipient=contact, text=text)
        )
    logger.info(
        "emergency unblinding %s: user %s, participant %s, %s notice(s)",
        entry.pk,
        by.pk,
        participant.pk,
        len(notices),
    )
    ids = [notice.pk for notice in notices]
    transaction.on_commit(lambda: unblinding_notices_email(ids))
    return Unblinded(arm=assignment.arm, entry=entry)


def _languages(users: list[Any]) -> dict[int, str]:
    return dict(UserPreference.objects.filter(user__in=users).values_list("user_id", "language"))


def unblinding_notice_text(entry: EmergencyUnblinding) -> str:
    """Who unblinded which study id, when and why: never the arm."""
    who = entry.user.get_full_name() or entry.user.get_username()
    return _(
        "%(who)s unblinded %(participant)s in an emergency on %(at)s (site time), audit "
        "entry #%(entry)s. Reason: %(reason)s"
    ) % {
        "who": who,
        "participant": participant_label(entry.participant),
        "at": site_time(entry.at, entry.participant.site),
        "entry": entry.pk,
        "reason": entry.reason,
    }


def unblinding_notices_email(notice_ids: list[int]) -> int:
    """Email each notice to its recipient (after the unblinding committed); returns how many
    were accepted. The subject names no participant and no health data. A recipient without
    an address, or a mail server that refuses, still has the notice in the app; the log says
    which notice was not emailed, never its text."""
    sent = 0
    notices = list(
        UnblindingNotice.objects.filter(pk__in=notice_ids)
        .select_related("recipient")
        .order_by("pk")
    )
    languages = _languages([notice.recipient for notice in notices])
    for notice in notices:
        address = notice.recipient.email
        if not address:
            logger.warning("unblinding notice %s not emailed: recipient has no address", notice.pk)
            continue
        with translation.override(languages.get(notice.recipient_id, settings.LANGUAGE_CODE)):
            subject = _("Emergency unblinding: a participant's code was broken")
        message = EmailMessage(
            subject=subject,
            body=notice.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
            headers={"Message-ID": f"<unblinding-notice-{notice.pk}@{UID_DOMAIN}>"},
        )
        try:
            message.send()
        except OSError as exc:
            logger.warning("unblinding notice %s not emailed: %s", notice.pk, type(exc).__name__)
            continue
        sent += 1
    return sent
