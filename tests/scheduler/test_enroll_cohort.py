"""Enrolling a cohort at once (`participants_enroll`): the same rows as enrolling each in
turn, all or nothing, and a number of statements that does not grow with the cohort."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from participants.models import Participant, TreatmentAssignment
from scheduler.models import (
    Membership,
    Reminder,
    ScheduledMilestone,
    ScheduledProcedure,
    ScheduledVisit,
    WebhookDelivery,
)
from scheduler.services import (
    Enrollment,
    EnrollmentError,
    participant_enroll,
    participants_enroll,
)
from scheduler.webhooks import webhook_subscription_create
from tests.factories import SiteFactory, participant_for
from trials.models import Arm

D = dt.date
NOW = dt.datetime(2026, 1, 20, 8, 30, tzinfo=dt.UTC)


def born(age: int) -> dt.date:
    return D(2026 - age, 1, 1) - dt.timedelta(days=100)


def people(versions: Any, prefix: str, site: Any) -> list[tuple[Participant, dt.date, Any]]:
    """One participant of each kind the cohort mixes, as (participant, enrolled on, arm):
    JASMINE (weekly visits, a weight-based taper) with email and SMS reminders; NIAMS
    (blinded, an arm, a consent anchor); TSUKUBA (a prednisolone taper, no contact at all);
    and a second JASMINE participant enrolled on another day, with a guardian."""
    jasmine, niams, tsukuba = versions
    return [
        (
            participant_for(
                jasmine,
                anchors={"day1": D(2026, 2, 2)},
                site=site,
                study_id=f"{prefix}-JAS-1",
                birth_date=born(50),
                weight_kg=Decimal("72.5"),
                email=f"{prefix.lower()}-jas-1@example.org",
                phone="+49 30 1234567",
                reminder_channels=["email", "sms"],
            ),
            D(2026, 1, 19),
            None,
        ),
        (
            participant_for(
                niams,
                anchors={"day1": D(2026, 2, 9), "consent": D(2026, 1, 12)},
                site=site,
                study_id=f"{prefix}-NIA-1",
                birth_date=born(45),
                email=f"{prefix.lower()}-nia-1@example.org",
            ),
            D(2026, 1, 12),
            Arm.objects.get(version=niams, code="ANI"),
        ),
        (
            participant_for(
                tsukuba,
                anchors={"psl_start": D(2026, 2, 2), "day1": D(2026, 2, 9)},
                site=site,
                study_id=f"{prefix}-TSU-1",
                birth_date=born(40),
            ),
            D(2026, 1, 20),
            None,
        ),
        (
            participant_for(
                jasmine,
                anchors={"day1": D(2026, 2, 16)},
                site=site,
                study_id=f"{prefix}-JAS-2",
                birth_date=born(60),
                weight_kg=Decimal(58),
                email=f"{prefix.lower()}-jas-2@example.org",
                guardian_name="Eva Example",
                guardian_email=f"{prefix.lower()}-guardian@example.org",
            ),
            D(2026, 1, 16),
            None,
        ),
    ]


def written(participant: Participant) -> dict[str, Any]:
    """Everything enrolling wrote for `participant`, without its own keys and names."""
    participant.refresh_from_db()
    visit_names = {
        visit.pk: (visit.visit_definition.code, visit.occurrence)  # type: ignore[union-attr]
        for visit in ScheduledVisit.objects.filter(participant=participant).select_related(
            "visit_definition"
        )
    }
    milestone_names = {
        milestone.pk: (milestone.rule.code, milestone.sequence)
        for milestone in ScheduledMilestone.objects.filter(participant=participant).select_related(
            "rule"
        )
    }

    def target(reminder: Reminder) -> Any:
        if reminder.visit_id is not None:
            return ("visit", visit_names[reminder.visit_id])
        if reminder.milestone_id is not None:
            return ("milestone", milestone_names[reminder.milestone_id])
        return (reminder.target_key.split(":")[0], ())

    history = participant.history.order_by("history_date", "history_id")
    return {
        "participant": (
            participant.status,
            participant.enrolled_on,
            participant.enrolled_at,
            [(h.history_type, h.history_change_reason, h.status) for h in history],
        ),
        "arms": [
            (a.arm.code, [(h.history_type, h.history_change_reason) for h in a.history.all()])
            for a in TreatmentAssignment.objects.filter(participant=participant)
        ],
        "visits": sorted(
            (
                visit_names[v.pk],
                v.protocol_version_id,
                v.target_date,
                v.window_start,
                v.window_end,
                v.estimated,
                v.status,
                v.version,
                v.ical_sequence,
                [(h.history_type, h.history_change_reason) for h in v.history.all()],
            )
            for v in ScheduledVisit.objects.filter(participant=participant)
        ),
        "procedures": sorted(
            (
                visit_names[p.visit_id],
                p.procedure.code,
                [(h.history_type, h.history_change_reason) for h in p.history.all()],
            )
            for p in ScheduledProcedure.objects.filter(visit__participant=participant)
        ),
        "milestones": sorted(
            (
                milestone_names[m.pk],
                m.due_date,
                m.dose_mg,
                m.flag,
                m.estimated,
                m.status,
                [(h.history_type, h.history_change_reason) for h in m.history.all()],
            )
            for m in ScheduledMilestone.objects.filter(participant=participant)
        ),
        "reminders": sorted(
            (
                target(r),
                r.rule_code,
                r.event,
                r.channel,
                r.audience,
                r.due_at,
                r.next_attempt_at,
                r.status,
            )
            for r in Reminder.objects.filter(participant=participant)
        ),
        "webhooks": sorted(
            (
                d.event_type,
                d.occurred_at,
                json.loads(d.body)["data"]["participant"]["status"],
                json.loads(d.body)["data"]["participant"]["enrolled_on"],
            )
            for d in WebhookDelivery.objects.filter(reminder__participant=participant)
        ),
    }


@pytest.mark.django_db
@override_settings(WEBHOOK_ALLOW_HTTP_LOOPBACK=True)
def test_a_cohort_enrolled_at_once_writes_what_enrolling_each_in_turn_writes(
    import_seed, django_user_model
) -> None:
    site = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    versions = import_seed("002"), import_seed("000"), import_seed("001")
    each = people(versions, "A", site)
    cohort = people(versions, "B", site)
    system = django_user_model.objects.create_user("berlin-ehr")
    trials = [version.trial for version in versions]
    for trial in trials:
        Membership.objects.create(
            user=system, trial=trial, site=site, role=Membership.Role.SITE_SYSTEM
        )
    for trial in trials:
        webhook_subscription_create(
            owner=system,
            trial=trial,
            sites=[site],
            url="http://127.0.0.1:9/hooks",
            events=["participant.enrolled", "visit.moved"],
            by=system,
        )
    coordinator = django_user_model.objects.create_user("coordinator")

    with time_machine.travel(NOW, tick=False):
        for participant, on, arm in each:
            participant_enroll(participant=participant, on=on, arm=arm, by=coordinator)
        planned = participants_enroll(
            enrollments=[Enrollment(participant, on, arm) for participant, on, arm in cohort],
            by=coordinator,
        )

    for (one, _on, _arm), (member, _, _) in zip(each, cohort, strict=True):
        alone, together = written(one), written(member)
        assert together == alone
        assert planned[member.pk] == len(alone["visits"])
    # What the comparison stands on: every kind of row was written.
    jasmine = written(each[0][0])
    assert jasmine["participant"][:2] == ("enrolled", D(2026, 1, 19))
    assert len(jasmine["visits"]) == 54
    assert {r[2] for r in jasmine["reminders"]} >= {"welcome", "invite"}
    assert {r[3] for r in jasmine["reminders"]} == {"email", "in_app", "webhook"}
    assert jasmine["webhooks"] == [("participant.enrolled", NOW, "enrolled", "2026-01-19")]
    assert written(cohort[1][0])["arms"] == [("ANI", [("+", "randomised at enrollment")])]
    tapered = [m[0] for m in written(cohort[2][0])["milestones"] if m[0][0] == "PSL_TAPER"]
    assert tapered == [("PSL_TAPER", week) for week in range(13)]


@pytest.mark.django_db
def test_a_cohort_is_refused_whole_naming_each_participant_refused_and_why(
    import_seed,
) -> None:
    site = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    jasmine = import_seed("002")
    fine = participant_for(jasmine, anchors={"day1": D(2026, 2, 2)}, site=site, study_id="OK-1")
    young = participant_for(
        jasmine,
        anchors={"day1": D(2026, 2, 2)},
        site=site,
        study_id="YOUNG-1",
        birth_date=D(2015, 5, 1),
    )
    enrolled = participant_for(
        jasmine, anchors={"day1": D(2026, 2, 2)}, site=site, study_id="DONE-1"
    )
    participant_enroll(participant=enrolled, on=D(2026, 1, 19))
    before = {
        "visits": ScheduledVisit.objects.count(),
        "reminders": Reminder.objects.count(),
        "history": Participant.history.count(),
    }

    with pytest.raises(EnrollmentError) as refused:
        participants_enroll(
            enrollments=[
                Enrollment(fine, D(2026, 1, 19)),
                Enrollment(young, D(2026, 1, 19)),
                Enrollment(enrolled, D(2026, 1, 19)),
            ]
        )

    too_young = "AGE (Adults aged 18 or older.): age 10 years is outside the required range (≥ 18)"
    assert [(p.study_id, problems) for p, problems in refused.value.refused] == [
        ("YOUNG-1", [too_young]),
        ("DONE-1", ["status is enrolled, expected screening"]),
    ]
    assert refused.value.problems == [
        f"YOUNG-1: {too_young}",
        "DONE-1: status is enrolled, expected screening",
    ]
    # Nothing of the cohort was written, not even for the one who could be enrolled.
    fine.refresh_from_db()
    assert fine.status == "screening"
    assert fine.enrolled_on is None
    assert {
        "visits": ScheduledVisit.objects.count(),
        "reminders": Reminder.objects.count(),
        "history": Participant.history.count(),
    } == before


@pytest.mark.django_db
def test_a_participant_named_twice_in_one_cohort_is_refused(import_seed) -> None:
    jasmine = import_seed("002")
    participant = participant_for(jasmine, anchors={"day1": D(2026, 2, 2)})
    with pytest.raises(ValueError, match="each participant once"):
        participants_enroll(
            enrollments=[
                Enrollment(participant, D(2026, 1, 19)),
                Enrollment(participant, D(2026, 1, 20)),
            ]
        )
    participant.refresh_from_db()
    assert participant.status == "screening"


@pytest.mark.integration  # Postgres: SQLite splits bulk inserts by its limit on parameters
@pytest.mark.django_db
@override_settings(WEBHOOK_ALLOW_HTTP_LOOPBACK=True)
def test_a_cohorts_statements_do_not_grow_with_its_size(
    import_seed, monkeypatch, django_user_model
) -> None:
    from scheduler import bulkwrite

    # Every table's rows written the same way at both sizes: with COPY from one row on.
    monkeypatch.setattr(bulkwrite, "COPY_FROM_ROWS", 1)
    monkeypatch.setattr(bulkwrite, "COPY_UPDATE_FROM_ROWS", 1)
    jasmine = import_seed("002")
    site = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    # A site system hears of each enrollment: its webhooks are planned for all at once too.
    system = django_user_model.objects.create_user("berlin-ehr")
    Membership.objects.create(
        user=system, trial=jasmine.trial, site=site, role=Membership.Role.SITE_SYSTEM
    )
    webhook_subscription_create(
        owner=system,
        trial=jasmine.trial,
        sites=[site],
        url="http://127.0.0.1:9/hooks",
        events=["participant.enrolled"],
        by=system,
    )

    def cohort(prefix: str, size: int) -> list[Enrollment]:
        return [
            Enrollment(
                participant_for(
                    jasmine,
                    anchors={"day1": D(2026, 2, 2) + dt.timedelta(days=n)},
                    site=site,
                    study_id=f"{prefix}-{n}",
                    email=f"{prefix.lower()}-{n}@example.org",
                ),
                D(2026, 1, 19),
            )
            for n in range(size)
        ]

    warm, small, large = cohort("W", 1), cohort("S", 2), cohort("L", 12)
    with time_machine.travel(NOW, tick=False):
        participants_enroll(enrollments=warm)  # the protocol's plan, read once a process
        with CaptureQueriesContext(connection) as few:
            participants_enroll(enrollments=small)
        with CaptureQueriesContext(connection) as many:
            participants_enroll(enrollments=large)
    assert Participant.objects.filter(status="enrolled").count() == 15
    assert Reminder.objects.filter(event="welcome").count() == 15
    assert WebhookDelivery.objects.filter(event_type="participant.enrolled").count() == 15
    assert len(many.captured_queries) == len(few.captured_queries) == 53
