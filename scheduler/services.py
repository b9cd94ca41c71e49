"""Use cases that span apps: enrolling a participant and persisting their calendar."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from participants.models import Participant, TreatmentAssignment
from participants.selectors import participant_anchor_dates, participant_eligibility_failures
from scheduler.engine import ParticipantFacts, PlanningError, plan
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.selectors import protocol_snapshot
from trials.models import Arm, MilestoneRule, ProcedureDefinition, VisitDefinition


class EnrollmentError(ValueError):
    """Enrollment was refused; `problems` lists every reason, in plain words."""

    def __init__(self, participant: Participant, problems: list[str]):
        self.problems = problems
        super().__init__(f"{participant} cannot be enrolled: " + "; ".join(problems))


@transaction.atomic
def participant_enroll(
    *, participant: Participant, on: dt.date, arm: Arm | None = None
) -> list[ScheduledVisit]:
    """Enroll a participant in screening and write their whole calendar in bulk.

    Refused, with every reason listed and nothing written, when the participant is not in
    screening, fails a machine-checkable eligibility criterion on `on` (age is taken on the
    consent date when one is recorded), lacks an anchor date the protocol counts from, or has an
    anchor outside its allowed range. The arm, when given, is stored apart as the treatment
    assignment.
    """
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    problems: list[str] = []
    if participant.status != Participant.Status.SCREENING:
        problems.append(f"status is {participant.status}, expected screening")
    anchors = participant_anchor_dates(participant=participant)
    problems += [
        str(failure)
        for failure in participant_eligibility_failures(
            participant=participant, on=anchors.get("consent", on)
        )
    ]
    version = participant.protocol_version
    if arm is not None and arm.version_id != version.id:
        problems.append(f"arm {arm.code} is not an arm of {version}")
    snapshot = protocol_snapshot(version=version)
    if arm is None and any(visit.arms for visit in snapshot.visits):
        problems.append("this protocol has arm-specific visits: a treatment arm is needed")
    calendar = None
    try:
        calendar = plan(
            snapshot,
            ParticipantFacts(
                anchors=anchors,
                weight_kg=participant.weight_kg,
                arm=arm.code if arm is not None else None,
            ),
        )
    except PlanningError as exc:
        problems += exc.problems
    if problems or calendar is None:
        raise EnrollmentError(participant, problems)

    visit_definitions = {v.code: v for v in VisitDefinition.objects.filter(version=version)}
    procedures = {p.code: p for p in ProcedureDefinition.objects.filter(version=version)}
    rules = {r.code: r for r in MilestoneRule.objects.filter(version=version)}

    visits = ScheduledVisit.objects.bulk_create(
        ScheduledVisit(
            participant=participant,
            visit_definition=visit_definitions[planned.visit_code],
            occurrence=planned.occurrence,
            protocol_version=version,
            target_date=planned.target,
            window_start=planned.window_start,
            window_end=planned.window_end,
            estimated=planned.estimated,
        )
        for planned in calendar.visits
    )
    ScheduledProcedure.objects.bulk_create(
        ScheduledProcedure(visit=visit, procedure=procedures[code])
        for visit, planned in zip(visits, calendar.visits, strict=True)
        for code in planned.procedures
    )
    ScheduledMilestone.objects.bulk_create(
        ScheduledMilestone(
            participant=participant,
            rule=rules[planned.milestone_code],
            sequence=planned.sequence,
            protocol_version=version,
            due_date=planned.due,
            dose_mg=planned.dose_mg,
            estimated=planned.estimated,
        )
        for planned in calendar.milestones
    )
    if arm is not None:
        TreatmentAssignment.objects.create(participant=participant, arm=arm)
    participant.status = Participant.Status.ENROLLED
    participant.enrolled_at = timezone.now()
    participant.save(update_fields=["status", "enrolled_at"])
    return visits
