from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history

from participants.models import Participant, ParticipantAnchor
from trials.models import Anchor, ProtocolVersion, Site, Trial, TrialSite


def study_id_taken(trial_id: int, study_id: str, *, other_than: int | None = None) -> str:
    """Why `study_id` (normalised) may not be used in the trial, or "": another participant
    has it, or a case variant of it (registration and edits both ask here)."""
    taken = Participant.objects.filter(trial_id=trial_id, study_id__iexact=study_id)
    if other_than is not None:
        taken = taken.exclude(pk=other_than)
    return _taken_words(study_id) if study_id and taken.exists() else ""


def _taken_words(study_id: str) -> str:
    return _("study id %(study_id)s is already registered in this trial") % {"study_id": study_id}


def study_id_normalized(study_id: str) -> str:
    """A study id as it is stored and compared: NFKC (a full-width "ＢＥＲＬＩＮ-００１" is
    "BERLIN-001"), without invisible format characters (zero-width spaces and joiners, bidi
    marks) and surrounding spaces. Two ids that read the same to a person are one id; a
    case variant of a registered id is refused at registration (it would read as the same
    participant on every list)."""
    text = unicodedata.normalize("NFKC", study_id)
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip()


def registration_version(*, trial: Trial, site: Site) -> ProtocolVersion | None:
    """The protocol version a participant registered at `site` starts on: the one the site's
    ethics approval covers, else the trial's newest published version (None if it has none)."""
    trial_site = (
        TrialSite.objects.select_related("protocol_version").filter(trial=trial, site=site).first()
    )
    if trial_site is not None and trial_site.protocol_version is not None:
        return trial_site.protocol_version
    return (
        ProtocolVersion.objects.filter(trial=trial, status=ProtocolVersion.Status.PUBLISHED)
        .order_by("-published_at", "-id")
        .first()
    )


@transaction.atomic
def participant_register(
    *,
    trial: Trial,
    site: Site,
    study_id: str,
    birth_date: dt.date,
    anchors: dict[str, dt.date],
    weight_kg: Decimal | None = None,
    email: str = "",
    phone: str = "",
    guardian_name: str = "",
    guardian_email: str = "",
    guardian_phone: str = "",
    reminder_channels: Sequence[str] = ("email",),
    reminders_opt_out: bool = False,
    quiet_hours: tuple[dt.time, dt.time] | None = None,
    timezone: str | None = None,
    language: str = Participant.Language.ENGLISH,
    protocol_version: ProtocolVersion | None = None,
    by: Any = None,
) -> Participant:
    """Register a participant in screening on the trial's newest published protocol version.

    The site must run the trial and the anchors must be ones the protocol defines; the
    participant's timezone defaults to the site's. Without an explicit version the participant
    starts on the version the site has approved, else the newest published one.
    """
    if not TrialSite.objects.filter(trial=trial, site=site).exists():
        raise ValidationError(
            {
                "site": _("site '%(site)s' does not run trial '%(trial)s'")
                % {"site": site.code, "trial": trial.code}
            }
        )
    if protocol_version is None:
        protocol_version = registration_version(trial=trial, site=site)
        if protocol_version is None:
            raise ValidationError(
                {"trial": _("trial '%(trial)s' has no published protocol") % {"trial": trial.code}}
            )
    elif protocol_version.trial_id != trial.id or not protocol_version.is_published:
        raise ValidationError(
            {
                "protocol_version": _("%(version)s is not a published version of %(trial)s")
                % {"version": protocol_version, "trial": trial.code}
            }
        )
    known = set(Anchor.objects.filter(version=protocol_version).values_list("code", flat=True))
    unknown = sorted(set(anchors) - known)
    if unknown:
        raise ValidationError(
            {
                "anchors": _("unknown anchor(s) %(unknown)s; the protocol defines %(known)s")
                % {"unknown": ", ".join(unknown), "known": ", ".join(sorted(known))}
            }
        )
    study_id = study_id_normalized(study_id)
    taken = study_id_taken(trial.pk, study_id)
    if taken:
        raise ValidationError({"study_id": taken})
    participant = Participant(
        trial=trial,
        site=site,
        study_id=study_id,
        protocol_version=protocol_version,
        birth_date=birth_date,
        weight_kg=weight_kg,
        email=email,
        phone=phone,
        guardian_name=guardian_name,
        guardian_email=guardian_email,
        guardian_phone=guardian_phone,
        reminder_channels=list(reminder_channels),
        reminders_opt_out=reminders_opt_out,
        quiet_hours_start=quiet_hours[0] if quiet_hours else None,
        quiet_hours_end=quiet_hours[1] if quiet_hours else None,
        timezone=timezone or site.timezone,
        language=language,
    )
    unknown_channels = sorted(set(reminder_channels) - {"email", "sms"})
    if unknown_channels:
        raise ValidationError(
            {
                "reminder_channels": _(
                    "unknown channel(s) %(channels)s; participants are reminded by email or sms"
                )
                % {"channels": ", ".join(unknown_channels)}
            }
        )
    participant.full_clean()
    participant._history_user = by  # type: ignore[attr-defined]
    participant._change_reason = "registered"  # type: ignore[attr-defined]
    try:
        with transaction.atomic():  # a savepoint: the race below leaves the caller's intact
            participant.save()
    except IntegrityError as exc:
        # Another registration of the same study id committed between the check and the
        # insert: the unique constraint has the last word, and the answer names the field.
        if "unique_study_id_per_trial" not in str(exc):
            raise
        raise ValidationError({"study_id": _taken_words(study_id)}) from None
    bulk_create_with_history(
        [
            ParticipantAnchor(participant=participant, code=code, date=date)
            for code, date in anchors.items()
        ],
        ParticipantAnchor,
        default_user=by,
        default_change_reason="registered",
    )
    return participant
