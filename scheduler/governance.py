"""Services that govern a trial rather than a calendar: its blinding, who works on it.

Each is one use case in one transaction, audited with who and why, like the calendar services
in scheduler/services.py.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from scheduler import access
from trials.models import Trial
from trials.protocol_file import Blinding


class GovernanceError(ValueError):
    """A change to a trial's governance that is refused, in words a person can act on."""


@transaction.atomic
def trial_blinding_change(*, trial: Trial, blinding: str, reason: str, by: Any) -> Trial:
    """Change a trial's blinding (unblinding it, typically at database lock).

    Only an unblinded role of the trial may do it, and only with a reason; the change is in the
    trial's audit trail with both. Everything that shows arms asks access.py, so from the commit
    on the arm shows where the new blinding allows it.
    """
    if blinding not in {b.value for b in Blinding}:
        raise GovernanceError(
            f"{blinding!r} is not a blinding; expected one of: "
            + ", ".join(b.value for b in Blinding)
        )
    if not access.can_change_blinding(by, trial=trial):
        raise GovernanceError(
            f"changing the blinding of {trial.code} needs the unblinded pharmacist role in it"
        )
    if not reason.strip():
        raise GovernanceError("a reason is required to change a trial's blinding")
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    if trial.blinding == blinding:
        raise GovernanceError(f"{trial.code} is already {blinding}")
    trial.blinding = blinding
    trial._history_user = by  # type: ignore[attr-defined]
    trial._change_reason = reason.strip()  # type: ignore[attr-defined]
    trial.save(update_fields=["blinding"])
    return trial
