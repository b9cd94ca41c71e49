"""Adding a participant in the admin: register, check eligibility, fix, enroll, all through the
services; the participant's protocol version is the one the site approved."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.urls import reverse

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll
from tests.conftest import seed_path, sign_in
from tests.factories import SiteFactory, member, member_of_every_trial_site, participant_for
from trials.models import ProtocolVersion, TrialSite
from trials.services import protocol_import

D = dt.date
# 2026-03-02 04:30 UTC is still 1 March (23:30 EST) in New York: the site's today is what counts.
NOW = dt.datetime(2026, 3, 2, 4, 30, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db
ADD_URL = "/admin/participants/participant/add/"

NIAMS_AGE_FAILURE = (
    "AGE (Aged 18 to 80 years.): age 17 years is outside the required range (≥ 18 and ≤ 80)"
)


@pytest.fixture(autouse=True)
def admin_coordinates_every_site(admin_user):
    """The admin sees clinical data through memberships only: the tests' admin is a
    coordinator wherever their participants are (scoping itself: tests/access/)."""
    with member_of_every_trial_site(admin_user):
        yield


@pytest.fixture
def also_investigator(admin_user, nih_niams):
    """The admin is also the site's investigator, who signs eligibility off."""
    member(admin_user, trial=nih_niams.trial, site=nih_niams.site, role="investigator")


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def nih_niams(import_seed) -> TrialSite:
    version = import_seed("000")
    site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center", email="c@example.org")
    return TrialSite.objects.create(trial=version.trial, site=site)


def enroll_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_enroll", args=[participant.pk])


def change_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_change", args=[participant.pk])


def registration(trial_site: TrialSite, **fields: str) -> dict[str, str]:
    return {
        "trial_site": str(trial_site.pk),
        "study_id": "NIH-CC-004",
        # 17 on the consent date (2026-02-20): born 2008-06-01.
        "birth_date": "2008-06-01",
        "weight_kg": "61.5",
        "email": "pat@example.org",
        "phone": "+1 301 555 0100",
        "guardian_name": "",
        "guardian_email": "",
        "language": "en",
        "timezone": "",
        "reminder_channels": "email",
        "anchor_day1": "2026-03-16",
        "anchor_consent": "2026-02-20",
        **fields,
    }


def definition_code(visit: ScheduledVisit) -> str:
    assert visit.visit_definition is not None
    return visit.visit_definition.code


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_add_participant_asks_for_the_trial_and_site_first(admin_client, nih_niams) -> None:
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    assert list(response.context["choice_form"].fields["trial_site"].choices) == [
        ("", "---------"),
        (nih_niams.pk, "niams-ani-vascular at NIH Clinical Center (nih-cc)"),
    ]
    assert response.context["form"] is None


def test_add_participant_form_asks_for_the_anchors_of_the_sites_approved_version(
    admin_client, nih_niams
) -> None:
    response = admin_client.get(ADD_URL, {"trial_site": nih_niams.pk})

    form = response.context["form"]
    assert response.context["version"] == ProtocolVersion.objects.get(label="1.0")
    assert [name for name in form.fields if name.startswith("anchor_")] == [
        "anchor_day1",
        "anchor_consent",
    ]
    assert form.fields["anchor_day1"].label == "Day 1 (first infusion, week 0)"


def test_add_participant_registers_in_screening_then_lists_the_eligibility_failures(
    admin_client, admin_user, nih_niams
) -> None:
    response = admin_client.post(ADD_URL, registration(nih_niams))

    participant = Participant.objects.get()
    assert response.status_code == 302
    assert response["Location"] == enroll_url(participant)
    assert (
        participant.study_id,
        participant.status,
        participant.protocol_version.label,
        participant.birth_date,
        participant.weight_kg,
        participant.email,
        participant.timezone,
        participant.reminder_channels,
    ) == (
        "NIH-CC-004",
        "screening",
        "1.0",
        D(2008, 6, 1),
        Decimal("61.5"),
        "pat@example.org",
        "America/New_York",
        ["email"],
    )
    assert {a.code: a.date for a in participant.anchors.all()} == {
        "consent": D(2026, 2, 20),
        "day1": D(2026, 3, 16),
    }
    assert participant.history.get().history_user == admin_user

    page = admin_client.get(response["Location"])

    assert page.context["problems"] == [NIAMS_AGE_FAILURE]
    assert page.context["may_enroll"] is False
    assert messages_of(page) == [
        "NIH-CC-004 registered in screening on niams-ani-vascular v1.0: "
        "check eligibility, then enroll."
    ]
    assert ScheduledVisit.objects.count() == 0


def test_coordinator_fixes_the_birth_date_rechecks_and_enrolls(
    admin_client, also_investigator, nih_niams
) -> None:
    admin_client.post(ADD_URL, registration(nih_niams), follow=True)
    participant = Participant.objects.get()

    fixed = admin_client.post(
        enroll_url(participant),
        {"birth_date": "1998-06-01", "weight_kg": "61.5", "_recheck": "1"},
        follow=True,
    )
    signed = admin_client.post(
        enroll_url(participant),
        {"birth_date": "1998-06-01", "weight_kg": "61.5", "_confirm_eligibility": "1"},
        follow=True,
    )
    enrolled = admin_client.post(
        enroll_url(participant),
        {"birth_date": "1998-06-01", "weight_kg": "61.5", "_enroll": "1"},
    )

    assert fixed.context["problems"] == []
    assert (fixed.context["may_confirm"], fixed.context["may_enroll"]) == (True, False)
    assert (signed.context["may_confirm"], signed.context["may_enroll"]) == (False, True)
    assert messages_of(signed) == [
        "Eligibility of niams-ani-vascular/NIH-CC-004 confirmed by admin."
    ]
    assert messages_of(fixed) == [
        "Details of niams-ani-vascular/NIH-CC-004 saved; eligibility checked again."
    ]
    assert enrolled.status_code == 302
    assert enrolled["Location"] == change_url(participant)
    participant.refresh_from_db()
    assert (participant.status, participant.birth_date) == ("enrolled", D(1998, 6, 1))
    assert [
        definition_code(v)
        for v in ScheduledVisit.objects.filter(participant=participant)
        .select_related("visit_definition")
        .order_by("target_date", "id")
    ] == ["V1", "V2", "V3", "V3C", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11"]
    landed = admin_client.get(enrolled["Location"])
    assert messages_of(landed) == [
        "Enrolled niams-ani-vascular/NIH-CC-004 on 2026-03-01: 12 visit(s) planned."
    ]


def test_enroll_with_failures_is_refused_by_the_service_and_writes_nothing(
    admin_client, nih_niams
) -> None:
    admin_client.post(ADD_URL, registration(nih_niams))
    participant = Participant.objects.get()

    response = admin_client.post(
        enroll_url(participant),
        {"birth_date": "2008-06-01", "weight_kg": "61.5", "_enroll": "1"},
    )

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        f"niams-ani-vascular/NIH-CC-004 cannot be enrolled: {NIAMS_AGE_FAILURE}; "
        "the site's investigator has not confirmed eligibility yet"
    ]
    participant.refresh_from_db()
    assert (participant.status, ScheduledVisit.objects.count()) == ("screening", 0)


def test_missing_anchor_is_listed_as_a_plain_problem(admin_client, nih_niams) -> None:
    admin_client.post(ADD_URL, registration(nih_niams, birth_date="1990-01-01", anchor_day1=""))
    participant = Participant.objects.get()

    page = admin_client.get(enroll_url(participant))

    assert page.context["problems"] == [
        "the date of Day 1 (first infusion, week 0) (day1) is needed"
    ]


def test_new_participants_start_on_the_version_their_site_approved(admin_client, nih_niams) -> None:
    text = seed_path("000").read_text(encoding="utf-8")
    newer = protocol_import(text=text.replace('label: "1.0"', 'label: "1.1"'), source="1.1")
    approved = ProtocolVersion.objects.get(label="1.0")
    nih_niams.protocol_version = approved
    nih_niams.save(update_fields=["protocol_version"])

    admin_client.post(ADD_URL, registration(nih_niams, birth_date="1990-01-01"))

    assert newer.is_published
    assert Participant.objects.get().protocol_version == approved


def test_registration_refused_by_the_service_shows_why_and_writes_nothing(
    admin_client, nih_niams
) -> None:
    participant_for(
        nih_niams.trial.versions.get(),
        anchors={"day1": D(2026, 3, 16)},
        site=nih_niams.site,
        study_id="NIH-CC-004",
    )

    response = admin_client.post(ADD_URL, registration(nih_niams))

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "study_id": ["study id NIH-CC-004 is already registered in this trial"]
    }
    assert Participant.objects.count() == 1


def test_add_needs_the_add_permission_and_enroll_the_calendar_permissions(
    client, django_user_model, nih_niams
) -> None:
    viewer = django_user_model.objects.create_user("viewer", password="a-long-passphrase")
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_participant"))
    sign_in(client, viewer)
    participant = participant_for(
        nih_niams.trial.versions.get(), anchors={"day1": D(2026, 3, 16)}, site=nih_niams.site
    )

    assert client.get(ADD_URL).status_code == 403
    assert client.post(ADD_URL, registration(nih_niams)).status_code == 403
    assert client.get(enroll_url(participant)).status_code == 403
    assert Participant.objects.count() == 1


def test_screening_participant_page_links_to_enrollment_and_enrolled_one_does_not(
    admin_client, nih_niams
) -> None:
    version = nih_niams.trial.versions.get()
    screening = participant_for(version, anchors={"day1": D(2026, 3, 16)}, site=nih_niams.site)
    enrolled = participant_for(version, anchors={"day1": D(2026, 3, 16)}, site=nih_niams.site)
    participant_enroll(participant=enrolled, on=D(2026, 3, 1))

    screening_actions = admin_client.get(change_url(screening)).context["lifecycle_actions"]
    enrolled_actions = admin_client.get(change_url(enrolled)).context["lifecycle_actions"]

    assert [label for label, _ in screening_actions] == [
        "Check eligibility and enroll",
        "Screen failed",
        "Withdraw",
        "Change anchor date",
        "Add unscheduled visit",
    ]
    assert screening_actions[0] == ("Check eligibility and enroll", enroll_url(screening))
    assert [label for label, _ in enrolled_actions] == [
        "Withdraw",
        "Change anchor date",
        "Add unscheduled visit",
        "Complete the study",
    ]


def test_enroll_page_of_an_enrolled_participant_goes_back_to_their_calendar(
    admin_client, nih_niams
) -> None:
    participant = participant_for(
        nih_niams.trial.versions.get(), anchors={"day1": D(2026, 3, 16)}, site=nih_niams.site
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))

    response = admin_client.get(enroll_url(participant), follow=True)

    assert response.redirect_chain == [(change_url(participant), 302)]
    assert messages_of(response) == [f"{participant} is enrolled, not in screening."]


def test_only_the_investigator_signs_eligibility_off_and_enrollment_waits_for_it(
    admin_client, nih_niams
) -> None:
    admin_client.post(ADD_URL, registration(nih_niams, birth_date="1990-01-01"))
    participant = Participant.objects.get()
    details = {"birth_date": "1990-01-01", "weight_kg": "61.5"}

    page = admin_client.get(enroll_url(participant))
    signed = admin_client.post(enroll_url(participant), {**details, "_confirm_eligibility": "1"})
    enrolled = admin_client.post(enroll_url(participant), {**details, "_enroll": "1"})

    assert (page.context["problems"], page.context["may_confirm"]) == ([], False)
    assert page.context["may_enroll"] is False
    assert signed.context["form"].non_field_errors() == [
        "only the site's investigator confirms eligibility"
    ]
    assert enrolled.context["form"].non_field_errors() == [
        "niams-ani-vascular/NIH-CC-004 cannot be enrolled: the site's investigator has not "
        "confirmed eligibility yet"
    ]
    participant.refresh_from_db()
    assert (participant.status, participant.eligibility_confirmed_by) == ("screening", None)


def test_a_changed_birth_date_clears_the_sign_off(
    admin_client, admin_user, also_investigator, nih_niams
) -> None:
    admin_client.post(ADD_URL, registration(nih_niams, birth_date="1990-01-01"))
    participant = Participant.objects.get()
    details = {"birth_date": "1990-01-01", "weight_kg": "61.5"}
    admin_client.post(enroll_url(participant), {**details, "_confirm_eligibility": "1"})
    participant.refresh_from_db()
    signed_by = participant.eligibility_confirmed_by

    admin_client.post(enroll_url(participant), {**details, "birth_date": "1991-01-01"})

    participant.refresh_from_db()
    assert (signed_by, participant.eligibility_confirmed_by) == (admin_user, None)
    assert participant.eligibility_confirmed_at is None
