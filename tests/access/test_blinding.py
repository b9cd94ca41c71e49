"""Blinding cannot be undone by an edit: only an unblinded role, with a reason, audited."""

from __future__ import annotations

import pytest

from scheduler.governance import GovernanceError, trial_blinding_change
from scheduler.models import Membership
from tests.conftest import seed_path
from tests.factories import SiteFactory, governs_trials
from trials.models import Trial
from trials.services import ProtocolImportError, protocol_import

Role = Membership.Role


def refusal(trial: Trial) -> str:
    return (
        f"changing the blinding of {trial.code} needs the unblinded pharmacist role in it and "
        "the permission to govern trials (trials.change_trial): it changes what every site sees"
    )


@pytest.fixture
def niams(import_seed):
    version = import_seed("000")
    site = SiteFactory.create(code="berlin", timezone="Europe/Berlin", country="DE")
    return version.trial, site


def member(django_user_model, name, trial, site, role):
    user = django_user_model.objects.create_user(name)
    Membership.objects.create(user=user, trial=trial, site=site, role=role)
    return user


@pytest.mark.django_db
@pytest.mark.parametrize(
    "role", [Role.COORDINATOR, Role.INVESTIGATOR, Role.SITE_SYSTEM, Role.SPONSOR_MONITOR]
)
def test_trial_blinding_change_is_refused_to_blinded_roles(niams, django_user_model, role) -> None:
    trial, site = niams
    site_for_role = None if role in Membership.TRIAL_WIDE else site
    user = member(django_user_model, "u", trial, site_for_role, role)

    with pytest.raises(GovernanceError) as caught:
        trial_blinding_change(trial=trial, blinding="open", reason="database lock", by=user)

    assert str(caught.value) == refusal(trial)
    assert Trial.objects.get(pk=trial.pk).blinding == "double"
    assert trial.history.count() == 1  # the import only


@pytest.mark.django_db
@pytest.mark.parametrize(
    "who",
    [
        "a site's unblinded pharmacist alone",
        "a trial governor with no role in it",
        "a trial governor with a blinded role in it",
        "a superuser with no role in it",
        "an unblinded pharmacist of another trial who governs trials",
    ],
)
def test_trial_blinding_change_needs_an_unblinded_role_and_trial_governance(
    niams, django_user_model, import_seed, who
) -> None:
    """The blinding is the whole trial's: one site's pharmacist may not open it for every
    site, and governing trials without seeing arms is not enough either."""
    trial, site = niams
    if who == "a site's unblinded pharmacist alone":
        user = member(django_user_model, "u", trial, site, Role.UNBLINDED_PHARMACIST)
    elif who == "a trial governor with no role in it":
        user = governs_trials(django_user_model.objects.create_user("u"))
    elif who == "a trial governor with a blinded role in it":
        user = governs_trials(member(django_user_model, "u", trial, site, Role.INVESTIGATOR))
    elif who == "a superuser with no role in it":
        user = django_user_model.objects.create_superuser("u")
    else:
        other = import_seed("001").trial
        user = governs_trials(
            member(django_user_model, "u", other, site, Role.UNBLINDED_PHARMACIST)
        )

    with pytest.raises(GovernanceError) as caught:
        trial_blinding_change(trial=trial, blinding="open", reason="database lock", by=user)

    assert str(caught.value) == refusal(trial)
    assert Trial.objects.get(pk=trial.pk).blinding == "double"
    assert trial.history.count() == 1


@pytest.mark.django_db
def test_trial_blinding_change_by_unblinded_role_with_reason_is_audited(
    niams, django_user_model
) -> None:
    trial, site = niams
    pharmacist = governs_trials(
        member(django_user_model, "pia", trial, site, Role.UNBLINDED_PHARMACIST)
    )

    with pytest.raises(GovernanceError) as no_reason:
        trial_blinding_change(trial=trial, blinding="open", reason="  ", by=pharmacist)
    trial_blinding_change(trial=trial, blinding="open", reason="database locked", by=pharmacist)

    assert str(no_reason.value) == "a reason is required to change a trial's blinding"
    latest = trial.history.order_by("-history_id").first()
    assert (latest.blinding, latest.history_user, latest.history_change_reason) == (
        "open",
        pharmacist,
        "database locked",
    )
    assert latest.prev_record.blinding == "double"


@pytest.mark.django_db
def test_protocol_import_refuses_to_change_a_trials_blinding(niams) -> None:
    trial, _site = niams
    path = seed_path("000")
    text = (
        path.read_text(encoding="utf-8")
        .replace("blinding: double", "blinding: open")
        .replace('label: "1.0"', 'label: "9.9"')
    )

    with pytest.raises(ProtocolImportError) as caught:
        protocol_import(text=text, source=path.name)

    assert str(caught.value) == (
        f"{path.name}: trial.blinding: {trial.code} is double-blind and this file says 'open'; "
        "a trial's blinding is changed only by an unblinded role, with a reason, not by "
        "importing a file"
    )
    assert Trial.objects.get(pk=trial.pk).blinding == "double"


@pytest.mark.django_db
def test_site_edits_are_audited(django_user_model) -> None:
    site = SiteFactory.create(code="tokyo", timezone="Asia/Tokyo", country="JP")
    site.phone = "+81 3 0000 0000"
    site._change_reason = "new switchboard"
    site.save(update_fields=["phone"])

    assert [
        (h.history_type, h.history_change_reason) for h in site.history.order_by("history_id")
    ] == [
        ("+", None),
        ("~", "new switchboard"),
    ]


@pytest.mark.django_db
def test_trial_admin_edit_cannot_change_blinding(niams, admin_client) -> None:
    trial, _site = niams
    page = admin_client.get(f"/admin/trials/trial/{trial.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form.initial.get(name, "") for name in form.fields}
    data.update(
        {
            "blinding": "open",
            "conditions": '["SLE"]',
            "registrations-TOTAL_FORMS": "0",
            "registrations-INITIAL_FORMS": "0",
            "trialsite_set-TOTAL_FORMS": "0",
            "trialsite_set-INITIAL_FORMS": "0",
        }
    )

    admin_client.post(f"/admin/trials/trial/{trial.pk}/change/", data)

    assert "blinding" not in form.fields
    assert Trial.objects.get(pk=trial.pk).blinding == "double"
