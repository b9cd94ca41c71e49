"""POST /api/v1/enrollments/: a cohort enrolled at once, all or none, each refusal named by
the item it is about."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from participants.models import Participant
from scheduler.api.views import ENROLLMENT_BATCH_MAX
from scheduler.models import Reminder, ScheduledVisit
from tests.api.conftest import World
from tests.factories import participant_for
from trials.models import ProtocolVersion

URL = "/api/v1/enrollments/"


def screened(world: World, study_id: str, site: Any = None, **fields: Any) -> Participant:
    return participant_for(
        ProtocolVersion.objects.get(trial=world.trial),
        anchors={"day1": dt.date(2026, 2, 16)},
        site=site or world.berlin,
        study_id=study_id,
        email=f"{study_id.lower()}@example.org",
        **fields,
    )


def post(world: World, role: str, body: Any, key: str) -> Any:
    return world.client(role).post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def nothing_enrolled(*people: Participant) -> bool:
    return all(
        Participant.objects.get(pk=p.pk).status == "screening"
        and not ScheduledVisit.objects.filter(participant=p).exists()
        and not Reminder.objects.filter(participant=p).exists()
        for p in people
    )


@pytest.mark.django_db
def test_a_site_system_enrolls_a_cohort_and_a_retry_replays_the_answer(world: World) -> None:
    first, second = screened(world, "BERLIN-101"), screened(world, "BERLIN-102")
    body = {
        "enrollments": [
            {"participant": first.pk, "on": "2026-01-20"},
            {"participant": second.pk, "on": "2026-01-19"},
        ]
    }

    answer = post(world, "site_system", body, "cohort-1")
    replay = post(world, "site_system", body, "cohort-1")

    assert answer.status_code == replay.status_code == 200, answer.content
    assert replay.json() == answer.json()
    assert answer.json() == {
        "enrolled": [
            {
                "participant": first.pk,
                "study_id": "BERLIN-101",
                "visits_planned": ScheduledVisit.objects.filter(participant=first).count(),
            },
            {
                "participant": second.pk,
                "study_id": "BERLIN-102",
                "visits_planned": ScheduledVisit.objects.filter(participant=second).count(),
            },
        ]
    }
    assert answer.json()["enrolled"][0]["visits_planned"] == 12
    assert [
        (p.status, p.enrolled_on)
        for p in Participant.objects.filter(pk__in=[first.pk, second.pk]).order_by("study_id")
    ] == [("enrolled", dt.date(2026, 1, 20)), ("enrolled", dt.date(2026, 1, 19))]
    # Each got their welcome, once, as one enrolled alone does.
    assert Reminder.objects.filter(participant__in=[first, second], event="welcome").count() == 2


@pytest.mark.django_db
def test_every_item_at_fault_is_named_and_nothing_is_enrolled(world: World) -> None:
    fine = screened(world, "BERLIN-201")
    elsewhere = screened(world, "TOKYO-201", site=world.tokyo)
    early = screened(world, "BERLIN-202")

    answer = post(
        world,
        "coordinator",
        {
            "enrollments": [
                {"participant": fine.pk, "on": "2026-01-20"},
                {"participant": elsewhere.pk, "on": "2026-01-20"},
                {"participant": early.pk, "on": "2026-01-21"},
                {"participant": fine.pk, "on": "2026-01-19"},
                {"participant": early.pk, "on": "2026-01-20", "arm": "ANI"},
                {"participant": 987654321, "on": "2026-01-20"},
            ]
        },
        "cohort-2",
    )

    assert answer.status_code == 400, answer.content
    assert sorted((error["field"], error["message"]) for error in answer.json()["errors"]) == [
        (
            "enrollments.1.participant",
            f"no participant {elsewhere.pk} that you may see",
        ),
        (
            "enrollments.2.on",
            "an enrollment is dated on or before the site's today (2026-01-20), not later",
        ),
        ("enrollments.3.participant", f"participant {fine.pk} is already item 0 of this batch"),
        (
            "enrollments.4.participant",
            f"participant {early.pk} is already item 2 of this batch",
        ),
        ("enrollments.5.participant", "no participant 987654321 that you may see"),
    ]
    assert nothing_enrolled(fine, elsewhere, early)


@pytest.mark.django_db
def test_a_refused_enrollment_refuses_the_batch_naming_the_item(world: World) -> None:
    fine = screened(world, "BERLIN-301")
    too_young = screened(world, "BERLIN-302", birth_date=dt.date(2012, 5, 1))
    already = world.people["BERLIN-001"]

    answer = post(
        world,
        "site_system",
        {
            "enrollments": [
                {"participant": fine.pk, "on": "2026-01-20"},
                {"participant": already.pk, "on": "2026-01-20"},
                {"participant": too_young.pk, "on": "2026-01-20"},
            ]
        },
        "cohort-3",
    )

    assert answer.status_code == 422, answer.content
    assert answer.json()["detail"] == "2 of the 3 participants cannot be enrolled; none was"
    errors = [(e["field"], e["message"]) for e in answer.json()["errors"]]
    assert errors[0] == ("enrollments.1", "status is enrolled, expected screening")
    assert [field for field, _message in errors[1:]] == ["enrollments.2"]
    assert "age 13 years" in errors[1][1]
    assert nothing_enrolled(fine, too_young)


@pytest.mark.django_db
def test_arms_and_read_only_roles_are_refused_per_item(world: World) -> None:
    participant = screened(world, "BERLIN-401")
    blinded = post(
        world,
        "coordinator",
        {"enrollments": [{"participant": participant.pk, "on": "2026-01-20", "arm": "ANI"}]},
        "cohort-4",
    )
    reader = post(
        world,
        "sponsor_monitor",
        {"enrollments": [{"participant": participant.pk, "on": "2026-01-20"}]},
        "cohort-5",
    )
    assert blinded.status_code == reader.status_code == 400
    assert blinded.json()["errors"] == [
        {
            "field": "enrollments.0.arm",
            "message": "your role may not assign the arm in this trial",
        }
    ]
    assert reader.json()["errors"] == [
        {
            "field": "enrollments.0.participant",
            "message": "your role may read this participant but not change it",
        }
    ]
    assert nothing_enrolled(participant)


@pytest.mark.django_db
def test_an_arm_the_version_does_not_have_is_named(world: World, django_user_model) -> None:
    from scheduler.models import Membership

    tsukuba = ProtocolVersion.objects.get(trial=world.other_trial)  # open: arms may be seen
    coordinator = django_user_model.objects.create_user("coordinator-osaka")
    Membership.objects.create(
        user=coordinator, trial=world.other_trial, site=world.osaka, role="coordinator"
    )
    participant = participant_for(
        tsukuba,
        anchors={"psl_start": dt.date(2026, 2, 2), "day1": dt.date(2026, 2, 9)},
        site=world.osaka,
        study_id="OSAKA-601",
    )
    world.users["coordinator-osaka"] = coordinator

    answer = post(
        world,
        "coordinator-osaka",
        {"enrollments": [{"participant": participant.pk, "on": "2026-01-20", "arm": "XYZ"}]},
        "cohort-6",
    )

    assert answer.status_code == 400, answer.content
    assert answer.json()["errors"] == [
        {"field": "enrollments.0.arm", "message": "no arm 'XYZ' in this protocol version"}
    ]
    assert nothing_enrolled(participant)


@pytest.mark.django_db
def test_malformed_and_oversized_batches_get_400_saying_where(world: World) -> None:
    participant = screened(world, "BERLIN-501")
    cases = {
        "no list": {"enrollments": "all of them"},
        "empty": {"enrollments": []},
        "bad date": {"enrollments": [{"participant": participant.pk, "on": "2026-02-30"}]},
        "no date": {"enrollments": [{"participant": participant.pk}]},
        "bad id": {"enrollments": [{"participant": "BERLIN-501", "on": "2026-01-20"}]},
        "too many": {
            "enrollments": [
                {"participant": n + 1, "on": "2026-01-20"} for n in range(ENROLLMENT_BATCH_MAX + 1)
            ]
        },
    }
    fields = {}
    for name, body in cases.items():
        answer = post(world, "site_system", body, f"bad-{name}")
        assert answer.status_code == 400, (name, answer.content)
        fields[name] = sorted({error["field"] for error in answer.json()["errors"]})
    assert fields == {
        "no list": ["enrollments"],
        "empty": ["enrollments"],
        "bad date": ["enrollments.0.on"],
        "no date": ["enrollments.0.on"],
        "bad id": ["enrollments.0.participant"],
        "too many": ["enrollments"],
    }
    assert nothing_enrolled(participant)
