"""A site's amendment re-plans only the reminders its change touches, and leaves every
participant's reminders as a whole re-plan of their calendar would.

`site_move_to_version` re-plans, for participants whose reminder rules the new version keeps,
only the reminders of the visits it added, moved, cancelled or changed the procedures of
(and of every milestone); a version with other rules re-plans everything. Each amendment
below is checked twice: the reminder it must change changed, exactly; and a whole re-plan of
every moved participant afterwards (`reminders_sync_many` with nothing left out) finds nothing
to cancel and nothing to add.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import time_machine
from django.contrib.auth.models import User

from participants.models import Participant
from scheduler.models import Reminder, ScheduledVisit
from scheduler.outbox.plan import reminders_sync_many
from scheduler.services import (
    participant_enroll,
    participant_move_to_version,
    site_move_to_version,
    visit_book,
)
from tests.conftest import seed_path
from tests.factories import SiteFactory, participant_for
from trials.models import ProtocolVersion, Site
from trials.services import protocol_import

UTC = dt.UTC
D = dt.date
pytestmark = pytest.mark.django_db

# Day 1 on 2026-02-02 at a site in New York: V4 on 2026-03-30, V9 on 2026-08-17, V10 on
# 2026-09-14. The amendment is approved and applied on 2026-02-10.
DAY1 = D(2026, 2, 2)
AMENDED_ON = dt.datetime(2026, 2, 10, 15, tzinfo=UTC)


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def fdg_at_v4(text: str) -> str:
    """V4 gains the FDG-PET/CT: its booked participant now fasts the evening before."""
    v4 = "    offset_days: 56\n    window: {before: 3, after: 3}\n    duration_minutes: 240\n"
    return _replace(
        text, v4 + "    procedures: [EXAM, LABS, INFUSION]", v4 + "    procedures: [FDGPET]"
    )


def fdg_gone_from_v10(text: str) -> str:
    """V10 no longer takes the FDG-PET/CT: no fasting reminder for it any more."""
    text = _replace(
        text,
        "    offset_days: 224\n    window: {before: 3, after: 3}\n    duration_minutes: 240\n"
        "    procedures: [EXAM, LABS, SLEQ, CAVI, FDGPET, INFUSION]",
        "    offset_days: 224\n    window: {before: 3, after: 3}\n    duration_minutes: 240\n"
        "    procedures: [EXAM, LABS, SLEQ, CAVI, INFUSION]",
    )
    head, tail = text.split("  - code: V10\n", 1)
    return head + "  - code: V10\n" + tail.replace("      - FDGPET\n", "", 1)


def v10_a_week_later(text: str) -> str:
    """V10 a week later: its window, and what the coordinators are told of it, move."""
    return _replace(text, "    offset_days: 224\n", "    offset_days: 231\n")


def v9_dropped(text: str) -> str:
    """V9 is no longer done: the amendment cancels it, and its reminders go."""
    head, tail = text.split("  - code: V9\n", 1)
    return head + "  - code: V10\n" + tail.split("  - code: V10\n", 1)[1]


def v9_twice(text: str) -> str:
    """A second week-28 visit a week after V9: new rows, each with its reminders."""
    head, tail = text.split("  - code: V10\n", 1)
    extra = (
        "  - code: V9B\n    name: Treatment visit 8b (week 29)\n    epoch: TRT\n"
        "    anchor: day1\n    offset_days: 203\n    window: {before: 3, after: 3}\n"
        "    duration_minutes: 60\n    procedures: [EXAM]\n"
    )
    return head + extra + "  - code: V10\n" + tail


def fasting_an_hour_earlier(text: str) -> str:
    """Other reminder rules: FAST at 18:00 instead of 19:00, for every visit, touched or not."""
    return _replace(
        text,
        '    event: evening_before_procedure\n    at: "19:00"',
        '    event: evening_before_procedure\n    at: "18:00"',
    )


def pending(participant: Participant, code: str, *rules: str) -> list[tuple[str, str, str]]:
    return sorted(
        (rule, channel, due_at.isoformat())
        for rule, channel, due_at in Reminder.objects.filter(
            participant=participant,
            visit__visit_definition__code=code,
            rule_code__in=rules,
            status="pending",
        ).values_list("rule_code", "channel", "due_at")
    )


def reminder_rows(participants: list[Participant]) -> list[tuple[object, ...]]:
    return list(
        Reminder.objects.filter(participant__in=participants)
        .order_by("pk")
        .values_list("pk", "target_key", "rule_code", "channel", "due_at", "status")
    )


def approved_at_site(
    site: Site, version: ProtocolVersion, coordinator: User, *, reason: str
) -> None:
    """The site approves `version` on AMENDED_ON and moves its participants onto it from then."""
    site_move_to_version(
        site=site,
        version=version,
        approved_on=AMENDED_ON.date(),
        on=AMENDED_ON.date(),
        by=coordinator,
        reason=reason,
    )


@pytest.fixture
def site_of_three(import_seed, django_user_model):
    """Three NIAMS participants in New York: one booked at V4 and V10, one booked at V10 with
    email only, one booked at nothing."""
    coordinator = django_user_model.objects.create_user("coordinator")
    version = import_seed("000")
    site = SiteFactory.create(timezone="America/New_York")
    people = []
    with time_machine.travel(dt.datetime(2026, 1, 10, 15, tzinfo=UTC), tick=False):
        for n, channels in enumerate((["email", "sms"], ["email"], ["email", "sms"])):
            participant = participant_for(
                version,
                anchors={"day1": DAY1},
                site=site,
                study_id=f"NY-{n}",
                email=f"p{n}@example.org",
                phone="+15551234567",
                reminder_channels=channels,
            )
            participant_enroll(
                participant=participant,
                on=D(2026, 1, 10),
                arm=version.arm_set.get(code="ANI"),
            )
            people.append(participant)
    with time_machine.travel(dt.datetime(2026, 2, 9, 15, tzinfo=UTC), tick=False):
        for participant, codes in zip(people, (("V4", "V10"), ("V10",), ()), strict=True):
            for code in codes:
                visit = ScheduledVisit.objects.get(
                    participant=participant, visit_definition__code=code
                )
                visit_book(
                    visit=visit, local_date=visit.target_date, local_time=dt.time(9), by=coordinator
                )
    return site, version, people, coordinator


# What the amendment must change, on the participant it names: (participant, visit, rules,
# pending before, pending after).
AMENDMENTS: dict[str, tuple[Callable[[str], str], int, str, tuple[str, ...], list, list]] = {
    "a procedure added": (
        fdg_at_v4,
        0,
        "V4",
        ("FAST",),
        [],
        # 19:00 on the evening before 2026-03-30, New York summer time (UTC-4).
        [
            ("FAST", "email", "2026-03-29T23:00:00+00:00"),
            ("FAST", "sms", "2026-03-29T23:00:00+00:00"),
        ],
    ),
    "a procedure dropped": (
        fdg_gone_from_v10,
        1,
        "V10",
        ("FAST",),
        [("FAST", "email", "2026-09-13T23:00:00+00:00")],
        [],
    ),
    "a visit moved": (
        v10_a_week_later,
        2,
        "V10",
        ("C_OPEN",),
        [("C_OPEN", "in_app", "2026-09-11T12:00:00+00:00")],
        [("C_OPEN", "in_app", "2026-09-18T12:00:00+00:00")],
    ),
    "a visit added": (
        v9_twice,
        2,
        "V9B",
        ("C_OPEN", "C_CLOSE", "C_OVERDUE"),
        [],
        [
            ("C_CLOSE", "email", "2026-08-25T12:00:00+00:00"),
            ("C_CLOSE", "in_app", "2026-08-25T12:00:00+00:00"),
            ("C_OPEN", "in_app", "2026-08-21T12:00:00+00:00"),
            ("C_OVERDUE", "in_app", "2026-08-28T12:00:00+00:00"),
        ],
    ),
    "a visit dropped": (
        v9_dropped,
        2,
        "V9",
        ("C_OPEN", "C_CLOSE", "C_OVERDUE"),
        [
            ("C_CLOSE", "email", "2026-08-18T12:00:00+00:00"),
            ("C_CLOSE", "in_app", "2026-08-18T12:00:00+00:00"),
            ("C_OPEN", "in_app", "2026-08-14T12:00:00+00:00"),
            ("C_OVERDUE", "in_app", "2026-08-21T12:00:00+00:00"),
        ],
        [],
    ),
    "other reminder rules": (
        fasting_an_hour_earlier,
        0,
        "V10",  # a visit the amendment does not touch
        ("FAST",),
        [
            ("FAST", "email", "2026-09-13T23:00:00+00:00"),
            ("FAST", "sms", "2026-09-13T23:00:00+00:00"),
        ],
        [
            ("FAST", "email", "2026-09-13T22:00:00+00:00"),
            ("FAST", "sms", "2026-09-13T22:00:00+00:00"),
        ],
    ),
}


@pytest.mark.parametrize("amendment", AMENDMENTS)
def test_an_amendment_leaves_the_reminders_a_whole_re_plan_would(site_of_three, amendment) -> None:
    site, _, people, coordinator = site_of_three
    edit, who, code, rules, before, after = AMENDMENTS[amendment]
    text = seed_path("000").read_text(encoding="utf-8")
    amended = protocol_import(
        text=edit(_replace(text, 'label: "1.0"', 'label: "1.1"')), source="niams-1.1.yaml"
    )
    with time_machine.travel(AMENDED_ON, tick=False):
        assert pending(people[who], code, *rules) == before
        approved_at_site(site, amended, coordinator, reason=amendment)
        assert pending(people[who], code, *rules) == after
        moved = reminder_rows(people)
        reminders_sync_many(Participant.objects.filter(pk__in=[p.pk for p in people]))
        assert reminder_rows(people) == moved


def test_one_site_with_movers_from_versions_of_other_rules(site_of_three) -> None:
    """A participant moved alone onto 1.0b (FAST at 18:00) and two still on 1.0 (19:00), moved
    together onto 1.1 (19:00, V4 gains the FDG-PET/CT): the two are re-planned for what the
    move changed, the one from 1.0b for every reminder, so its untouched V10 is reminded at
    19:00 again."""
    site, _, people, coordinator = site_of_three
    text = _replace(seed_path("000").read_text(encoding="utf-8"), 'label: "1.0"', 'label: "1.X"')
    other_rules = protocol_import(
        text=fasting_an_hour_earlier(text.replace('label: "1.X"', 'label: "1.0b"')),
        source="niams-1.0b.yaml",
    )
    amended = protocol_import(
        text=fdg_at_v4(text.replace('label: "1.X"', 'label: "1.1"')), source="niams-1.1.yaml"
    )
    with time_machine.travel(AMENDED_ON, tick=False):
        participant_move_to_version(
            participant=people[1],
            version=other_rules,
            on=AMENDED_ON.date(),
            by=coordinator,
            reason="1.0b",
        )
        assert pending(people[1], "V10", "FAST") == [("FAST", "email", "2026-09-13T22:00:00+00:00")]
        approved_at_site(site, amended, coordinator, reason="1.1")
        assert pending(people[1], "V10", "FAST") == [("FAST", "email", "2026-09-13T23:00:00+00:00")]
        assert pending(people[0], "V4", "FAST") == [
            ("FAST", "email", "2026-03-29T23:00:00+00:00"),
            ("FAST", "sms", "2026-03-29T23:00:00+00:00"),
        ]
        moved = reminder_rows(people)
        reminders_sync_many(Participant.objects.filter(pk__in=[p.pk for p in people]))
        assert reminder_rows(people) == moved
