"""Adversarial review: can a blinded role, or anything sent outside, learn (or infer) a
participant's treatment arm? And is the emergency unblinding held to who/why/when, without
widening what anybody else sees?

Uses the world of tests/unblinding/conftest.py: the blinded NIAMS trial at Berlin and Tokyo,
BERLIN-001 on anifrolumab, BERLIN-002 and TOKYO-001 on placebo, the Berlin investigator and
the pharmacists of both sites (password PASSWORD)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler import access
from scheduler.governance import GovernanceError, trial_blinding_change
from scheduler.models import EmergencyUnblinding, Membership, SecurityEvent, UnblindingNotice
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.factories import SiteFactory, governs_trials, member, participant_for
from tests.unblinding.conftest import PASSWORD, user
from trials.models import Arm

Role = Membership.Role
pytestmark = pytest.mark.django_db
REASON = "Anaphylaxis during the week-4 infusion; the treating physician needs the arm"
ARM_WORDS = ("Anifrolumab", "(ANI)", '"ANI"', "Placebo", "placebo", "PBO")


REFUSED = (
    "visit D1_ANI of version 1.0 is limited to arm(s) ANI, which would show the arm in every "
    "calendar of a double-blind trial; give it to every arm in a new version first"
)


def calendar_of(someone: Any, participant: Any) -> list[dict[str, Any]]:
    calendar = api(someone).get(reverse("api:participant-calendar", args=[participant.pk]))
    assert calendar.status_code == 200
    return calendar.json()["visits"]  # type: ignore[no-any-return]


def api(someone: Any) -> APIClient:
    client = APIClient()
    # A fresh user object, as each request has (access.py caches memberships on it).
    client.force_authenticate(type(someone).objects.get(pk=someone.pk))
    return client


def arm_words(text: str) -> list[str]:
    return [word for word in ARM_WORDS if word in text]


def unblind_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_emergency_unblind", args=[participant.pk])


# ----------------------------------------------------------------------------------------
# Arm-dependent schedules: the importer refuses a visit limited to some arms of a blinded
# trial, because the calendar would show the arm. The blinding can also change later.


def test_blinding_an_open_trial_with_arm_specific_visits_never_shows_the_arm_in_calendars(
    import_seed, django_user_model, django_capture_on_commit_callbacks
) -> None:
    """Vitiligo (open) gives infusion visits to the ANI arm only and a phototherapy-only
    series to PHOTO. If its blinding is changed to double-blind, either the change is refused
    or a blinded coordinator's calendars no longer differ by arm."""
    version = import_seed("003d")
    site = SiteFactory.create(code="leiden", timezone="Europe/Amsterdam", country="NL")
    arms = {arm.code: arm for arm in Arm.objects.filter(version=version)}
    people = {}
    with django_capture_on_commit_callbacks(execute=False):
        for study_id, arm in (("LEI-001", "ANI"), ("LEI-002", "PHOTO")):
            participant = participant_for(
                version,
                anchors={"day1": dt.date(2026, 3, 2), "consent": dt.date(2026, 2, 9)},
                site=site,
                study_id=study_id,
            )
            participant_enroll(participant=participant, on=dt.date(2026, 2, 16), arm=arms[arm])
            people[arm] = participant
    trial = version.trial
    pharmacist = governs_trials(
        member(
            user(django_user_model, "pharmacist-leiden"),
            trial=trial,
            site=site,
            role=Role.UNBLINDED_PHARMACIST,
        )
    )
    coordinator = member(
        user(django_user_model, "cora-leiden"), trial=trial, site=site, role=Role.COORDINATOR
    )

    with pytest.raises(GovernanceError) as refused:
        trial_blinding_change(
            trial=trial, blinding="double", reason="sponsor asks to blind", by=pharmacist
        )

    trial.refresh_from_db()
    assert str(refused.value) == REFUSED
    assert trial.blinding == "open"
    # So a blinded role never meets the calendars, which differ by arm.
    seen = {
        arm: sorted({visit["code"].split("#")[0] for visit in calendar_of(coordinator, person)})
        for arm, person in people.items()
    }
    assert seen["ANI"] != seen["PHOTO"]
    detail = api(coordinator).get(reverse("api:participant-detail", args=[people["ANI"].pk]))
    assert detail.json()["arm"] == "ANI"  # open: everyone sees it, as the trial says


# ----------------------------------------------------------------------------------------
# Lists, filters and error messages.


@pytest.mark.parametrize(
    "url",
    [
        "admin:participants_participant_changelist",
        "admin:scheduler_scheduledvisit_changelist",
        "admin:scheduler_scheduledvisit_export",
    ],
)
def test_an_admin_lookup_through_the_real_assignment_relation_is_refused(
    client, world, django_user_model, url
) -> None:
    """The related name is `treatment_assignment` (tests/workspace spells it without the
    underscore, which is no field at all): with the real name, a list or the export filtered
    by arm would count each arm. Both arms must answer alike, and not with a list."""
    coordinator = member(
        user(django_user_model, "cora"),
        trial=world.unblinded.trial,
        site=world.berlin,
        role=Role.COORDINATOR,
    )
    sign_in(client, coordinator)
    prefix = "" if "participant_changelist" in url else "participant__"
    answers = {}
    for code in ("ANI", "PBO"):
        response = client.get(reverse(url), {f"{prefix}treatment_assignment__arm__code": code})
        answers[code] = (response.status_code, response.get("Location"))

    assert answers["ANI"] == answers["PBO"]
    assert answers["ANI"][0] != 200


def test_the_api_refuses_an_arm_from_a_blinded_role_in_the_same_words_whatever_the_arm(
    world, django_user_model
) -> None:
    """Whether the arm code exists in the protocol is not an oracle either."""
    coordinator = member(
        user(django_user_model, "cora"),
        trial=world.unblinded.trial,
        site=world.berlin,
        role=Role.COORDINATOR,
    )
    screening = participant_for(
        world.unblinded.protocol_version,
        anchors={"day1": dt.date(2026, 3, 16)},
        site=world.berlin,
        study_id="BERLIN-009",
    )
    detail = api(coordinator).get(reverse("api:participant-detail", args=[screening.pk]))
    etag = detail["ETag"]

    answers = {}
    for code in ("ANI", "PBO", "NOPE"):
        response = api(coordinator).post(
            reverse("api:participant-enroll", args=[screening.pk]),
            {"on": "2026-02-20", "arm": code},
            format="json",
            HTTP_IF_MATCH=etag,
            HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
        )
        body = response.json()
        body.pop("instance", None)  # the problem's own request id, if any
        answers[code] = (response.status_code, body.get("errors"))

    assert answers["ANI"] == answers["PBO"] == answers["NOPE"]
    assert answers["ANI"][0] in (400, 403, 422)
    assert Participant.objects.get(pk=screening.pk).status == Participant.Status.SCREENING


def test_a_pharmacist_who_is_also_a_coordinator_elsewhere_sees_the_arm_at_their_own_site_only(
    client, world
) -> None:
    """Berlin's pharmacist also coordinates at Tokyo: the API and the CSV export show BERLIN
    arms, never TOKYO's (the export's arm column is there, empty for Tokyo's rows)."""
    pharmacist = world.pharmacist_berlin
    member(pharmacist, trial=world.unblinded.trial, site=world.tokyo, role=Role.COORDINATOR)

    listing = api(pharmacist).get(reverse("api:participant-list"), {"page_size": 200})
    arms = {row["study_id"]: row["arm"] for row in listing.json()["results"]}

    sign_in(client, pharmacist)
    export = client.get(reverse("admin:scheduler_scheduledvisit_export"))
    lines = [line.split(",") for line in b"".join(export.streaming_content).decode().splitlines()]
    header, rows = lines[0], lines[1:]
    exported = {(row[2], row[header.index("arm")]) for row in rows}

    assert arms == {"BERLIN-001": "ANI", "BERLIN-002": "PBO", "TOKYO-001": None}
    assert exported == {("BERLIN-001", "ANI"), ("BERLIN-002", "PBO"), ("TOKYO-001", "")}


# ----------------------------------------------------------------------------------------
# Emergency unblinding: it shows one arm once, to that person, and widens nothing.


def test_after_an_emergency_unblinding_nothing_else_shows_the_arm(
    client, world, django_user_model, django_capture_on_commit_callbacks
) -> None:
    sign_in(client, world.investigator)
    with django_capture_on_commit_callbacks(execute=True):
        result = client.post(unblind_url(world.unblinded), {"password": PASSWORD, "reason": REASON})
    assert re.search(
        r'<td id="unblinded-arm"><strong>Anifrolumab</strong>', result.content.decode()
    )
    # The one page that shows it is kept by no cache on the way.
    assert "no-store" in result["Cache-Control"]
    monitor = member(
        user(django_user_model, "mona"), trial=world.unblinded.trial, role=Role.SPONSOR_MONITOR
    )

    # The investigator's own pages and API afterwards: blinded as before.
    pages = [
        client.get(reverse("admin:participants_participant_change", args=[world.unblinded.pk])),
        client.get(reverse("admin:participants_participant_timeline", args=[world.unblinded.pk])),
        client.get(unblind_url(world.unblinded)),
        client.get(reverse("admin:participants_participant_history", args=[world.unblinded.pk])),
    ]
    detail = api(world.investigator).get(
        reverse("api:participant-detail", args=[world.unblinded.pk])
    )
    # The monitor reads the audit entry (who, whom, why), not the arm.
    sign_in(client, monitor)
    entry = EmergencyUnblinding.objects.get()
    audit_page = client.get(reverse("admin:scheduler_emergencyunblinding_change", args=[entry.pk]))
    notices = list(UnblindingNotice.objects.values_list("text", flat=True))

    assert [page.status_code for page in pages] == [200, 200, 200, 200]
    assert [arm_words(page.content.decode()) for page in pages] == [[], [], [], []]
    assert (detail.status_code, detail.json()["arm"]) == (200, None)
    assert audit_page.status_code == 200 and arm_words(audit_page.content.decode()) == []
    assert [arm_words(text) for text in notices] == [[], []]
    assert (entry.user, entry.participant, entry.reason) == (
        world.investigator,
        world.unblinded,
        REASON,
    )


def test_emergency_unblinding_of_another_trial_at_the_same_site_is_an_unknown_id(
    client, world, import_seed, django_capture_on_commit_callbacks
) -> None:
    """JASMINE (also blinded) runs at Berlin, but the investigator works only on NIAMS: its
    participant is a 404 exactly like an id that does not exist, and nothing is written."""
    jasmine = import_seed("002")
    other = participant_for(
        jasmine,
        anchors={"day1": dt.date(2026, 3, 2)},
        site=world.berlin,
        study_id="BERLIN-J01",
    )
    sign_in(client, world.investigator)
    newest = Participant.objects.order_by("-pk").first()
    assert newest is not None
    missing = newest.pk + 1000

    with django_capture_on_commit_callbacks(execute=True):
        theirs = client.post(unblind_url(other), {"password": PASSWORD, "reason": REASON})
        unknown = client.post(
            reverse("admin:participants_participant_emergency_unblind", args=[missing]),
            {"password": PASSWORD, "reason": REASON},
        )

    assert (theirs.status_code, theirs.content) == (404, unknown.content)
    assert (EmergencyUnblinding.objects.count(), UnblindingNotice.objects.count()) == (0, 0)


def _refused(statement: Any) -> bool:
    try:
        with transaction.atomic():
            statement()
    except DatabaseError:
        return True
    return False


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the triggers are Postgres's")
def test_the_emergency_unblinding_audit_cannot_be_rewritten_in_the_database(
    world, django_capture_on_commit_callbacks
) -> None:
    from scheduler.governance import participant_emergency_unblind

    with django_capture_on_commit_callbacks(execute=True):
        participant_emergency_unblind(
            participant=world.unblinded, by=world.investigator, password=PASSWORD, reason=REASON
        )
    SecurityEvent.objects.create(at=dt.datetime.now(dt.UTC), kind="login", username="x")
    entry = EmergencyUnblinding.objects.get()

    refused = (
        # The security audit, for comparison: refused by its trigger.
        _refused(lambda: SecurityEvent.objects.update(username="someone else")),
        _refused(lambda: EmergencyUnblinding.objects.filter(pk=entry.pk).update(reason="x")),
        _refused(
            lambda: EmergencyUnblinding.objects.filter(pk=entry.pk).update(
                user=world.pharmacist_tokyo
            )
        ),
        _refused(lambda: UnblindingNotice.objects.filter(unblinding=entry).delete()),
    )

    assert refused == (True, True, True, True)
    assert EmergencyUnblinding.objects.get().reason == REASON


def test_the_scoping_of_arms_holds_for_every_blinded_role_at_the_unblinded_site(
    world, django_user_model
) -> None:
    """access.py itself: no blinded role of the trial, at Berlin or trial-wide, reads an
    assignment or is told it may see arms; the pharmacist reads Berlin's only."""
    trial = world.unblinded.trial
    seen = {}
    for role in (
        Role.COORDINATOR,
        Role.INVESTIGATOR,
        Role.SITE_SYSTEM,
        Role.SPONSOR_MONITOR,
        Role.DATA_MANAGER,
    ):
        site = None if role in Membership.TRIAL_WIDE else world.berlin
        someone = member(user(django_user_model, f"x-{role}"), trial=trial, site=site, role=role)
        fresh = type(someone).objects.get(pk=someone.pk)
        seen[role] = (
            access.assignments_for(fresh).count(),
            access.can_see_arm(fresh, trial=trial),
            access.can_see_arm(fresh, trial=trial, site=world.berlin),
        )
    pharmacist = type(world.pharmacist_berlin).objects.get(pk=world.pharmacist_berlin.pk)

    assert set(seen.values()) == {(0, False, False)}
    assert sorted(
        access.assignments_for(pharmacist).values_list("participant__study_id", flat=True)
    ) == ["BERLIN-001", "BERLIN-002"]
    assert access.can_see_arm(pharmacist, trial=trial, site=world.tokyo) is False
