"""Emergency unblinding in the admin: refused without the password or a reason (nothing shown,
nothing written), closed to blinded roles, and a valid one shows exactly one arm."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from scheduler.models import EmergencyUnblinding, Membership, UnblindingNotice
from tests.conftest import sign_in
from tests.factories import member
from tests.unblinding.conftest import PASSWORD, user

Role = Membership.Role
pytestmark = pytest.mark.django_db
REASON = "Anaphylaxis during the week-4 infusion; the treating physician needs the arm"


def unblind_url(participant) -> str:
    return reverse("admin:participants_participant_emergency_unblind", args=[participant.pk])


def change_url(participant) -> str:
    return reverse("admin:participants_participant_change", args=[participant.pk])


def arms_shown(response) -> list[str]:
    """Every arm name or code the page shows (the seed's arms are ANI and PBO)."""
    body = response.content.decode()
    return [word for word in ("Anifrolumab", "(ANI)", "Placebo", "placebo", "PBO") if word in body]


def nothing_written() -> tuple[int, int, int]:
    return (EmergencyUnblinding.objects.count(), UnblindingNotice.objects.count(), len(mail.outbox))


def error_of(response) -> str:
    found = re.search(
        r'<p class="errornote" id="unblinding-error">(.*?)</p>', response.content.decode()
    )
    assert found is not None, response.content.decode()
    return found.group(1)


@pytest.mark.parametrize(
    ("password", "reason", "message"),
    [
        ("", REASON, "Re-enter your password to unblind: nothing was unblinded."),
        ("not my password", REASON, "That is not your password: nothing was unblinded."),
        (
            PASSWORD,
            "   ",
            "Give the reason for the emergency unblinding: nothing was unblinded.",
        ),
        ("", "", "Re-enter your password to unblind: nothing was unblinded."),
    ],
    ids=["no-password", "wrong-password", "blank-reason", "neither"],
)
def test_a_refused_unblinding_shows_why_and_nothing_else(
    client, world, django_capture_on_commit_callbacks, password, reason, message
) -> None:
    sign_in(client, world.investigator)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            unblind_url(world.unblinded), {"password": password, "reason": reason}
        )

    assert response.status_code == 200
    assert response.templates[0].name == "admin/unblinding/form.html"
    assert error_of(response) == message.replace("'", "&#x27;")
    assert arms_shown(response) == []
    assert 'id="unblinded-arm"' not in response.content.decode()
    # The password is never sent back into the form.
    assert 'value="not my password"' not in response.content.decode()
    assert nothing_written() == (0, 0, 0)


def test_the_form_asks_for_password_and_reason_and_shows_no_arm(client, world) -> None:
    sign_in(client, world.investigator)

    response = client.get(unblind_url(world.unblinded))

    assert response.status_code == 200
    assert list(response.context["form"].fields) == ["password", "reason"]
    assert 'type="password"' in response.content.decode()
    assert arms_shown(response) == []
    assert nothing_written() == (0, 0, 0)


def test_a_valid_unblinding_shows_one_arm_and_leaves_one_entry_and_one_notice_per_contact(
    client, world, django_capture_on_commit_callbacks
) -> None:
    sign_in(client, world.investigator)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            unblind_url(world.unblinded), {"password": PASSWORD, "reason": f"  {REASON} "}
        )

    entry = EmergencyUnblinding.objects.get()
    body = response.content.decode()
    assert response.status_code == 200
    assert response.templates[0].name == "admin/unblinding/result.html"
    arm_cell = re.search(r'<td id="unblinded-arm">(.*?)</td>', body)
    assert arm_cell is not None
    assert arm_cell.group(1) == "<strong>Anifrolumab</strong> (ANI)"
    # The other participants (both on placebo) are neither named nor their arm shown.
    assert arms_shown(response) == ["Anifrolumab", "(ANI)"]
    assert "BERLIN-002" not in body and "TOKYO-001" not in body
    entry_cell = re.search(r'<td id="unblinding-entry">(.*?)</td>', body)
    assert entry_cell is not None
    assert entry_cell.group(1) == f"#{entry.pk}, Fri 20 Feb 2026 13:00 CET"
    assert (entry.participant, entry.user, entry.reason) == (
        world.unblinded,
        world.investigator,
        REASON,
    )
    # One notice per unblinded contact (the pharmacists of Berlin and Tokyo), in the app and
    # by email, saying who unblinded which study id and why: never the arm.
    text = (
        f"Ines Weber unblinded niams-ani-vascular BERLIN-001 in an emergency on Fri 20 Feb 2026 "
        f"13:00 CET (site time), audit entry #{entry.pk}. Reason: {REASON}"
    )
    notices = UnblindingNotice.objects.order_by("recipient_id")
    assert [(n.unblinding, n.recipient, n.text) for n in notices] == [
        (entry, world.pharmacist_berlin, text),
        (entry, world.pharmacist_tokyo, text),
    ]
    assert [(m.to, m.subject, m.body) for m in mail.outbox] == [
        (
            ["pharmacist-berlin@example.org"],
            "Emergency unblinding: a participant's code was broken",
            text,
        ),
        (
            ["pharmacist-tokyo@example.org"],
            "Emergency unblinding: a participant's code was broken",
            text,
        ),
    ]
    for word in ("Anifrolumab", "ANI", "Placebo", "PBO"):
        assert word not in text


def test_the_pharmacist_may_unblind_at_their_own_site(
    client, world, django_capture_on_commit_callbacks
) -> None:
    sign_in(client, world.pharmacist_berlin)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            unblind_url(world.neighbour), {"password": PASSWORD, "reason": "dosing error"}
        )
        far = client.post(unblind_url(world.far), {"password": PASSWORD, "reason": "x"})

    arm_cell = re.search(r'<td id="unblinded-arm">(.*?)</td>', response.content.decode())
    assert arm_cell is not None and arm_cell.group(1) == "<strong>Placebo</strong> (PBO)"
    # Tokyo's participant is another site's: a 404, nothing written for it.
    assert far.status_code == 404
    assert [e.participant for e in EmergencyUnblinding.objects.all()] == [world.neighbour]
    assert UnblindingNotice.objects.count() == 2


@pytest.mark.parametrize(
    ("role", "at", "status"),
    [
        (Role.COORDINATOR, "berlin", 403),
        (Role.SITE_SYSTEM, "berlin", 403),
        (Role.SPONSOR_MONITOR, None, 403),
        (Role.COORDINATOR, "tokyo", 404),
        (Role.INVESTIGATOR, "tokyo", 404),
    ],
)
def test_blinded_roles_and_other_sites_are_refused(
    client, world, django_user_model, django_capture_on_commit_callbacks, role, at, status
) -> None:
    someone = member(
        user(django_user_model, "someone"),
        trial=world.unblinded.trial,
        site=getattr(world, at) if at else None,
        role=role,
    )
    sign_in(client, someone)

    with django_capture_on_commit_callbacks(execute=True):
        page = client.get(unblind_url(world.unblinded))
        post = client.post(unblind_url(world.unblinded), {"password": PASSWORD, "reason": REASON})

    assert (page.status_code, post.status_code) == (status, status)
    assert arms_shown(post) == []
    assert nothing_written() == (0, 0, 0)


def test_the_link_is_on_the_participant_page_for_permitted_roles_only(
    client, world, django_user_model
) -> None:
    coordinator = member(
        user(django_user_model, "cora"),
        trial=world.unblinded.trial,
        site=world.berlin,
        role=Role.COORDINATOR,
    )
    link = f'<a href="{unblind_url(world.unblinded)}">Emergency unblinding</a>'

    sign_in(client, world.investigator)
    investigator_page = client.get(change_url(world.unblinded)).content.decode()
    sign_in(client, world.pharmacist_berlin)
    pharmacist_page = client.get(change_url(world.unblinded)).content.decode()
    sign_in(client, coordinator)
    coordinator_page = client.get(change_url(world.unblinded)).content.decode()

    assert (link in investigator_page, link in pharmacist_page, link in coordinator_page) == (
        True,
        True,
        False,
    )
    # The page's other links are still there.
    assert ">Calendar feed</a>" in investigator_page


def test_the_audit_entries_are_read_by_monitors_and_pharmacists_never_edited(
    client, world, django_user_model, django_capture_on_commit_callbacks
) -> None:
    sign_in(client, world.investigator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(unblind_url(world.unblinded), {"password": PASSWORD, "reason": REASON})
    entry = EmergencyUnblinding.objects.get()
    trial = world.unblinded.trial
    monitor = member(user(django_user_model, "mona"), trial=trial, role=Role.SPONSOR_MONITOR)
    coordinator = member(
        user(django_user_model, "cora"), trial=trial, site=world.berlin, role=Role.COORDINATOR
    )
    changelist = reverse("admin:scheduler_emergencyunblinding_changelist")
    entry_url = reverse("admin:scheduler_emergencyunblinding_change", args=[entry.pk])
    delete_url = reverse("admin:scheduler_emergencyunblinding_delete", args=[entry.pk])

    seen = {}
    for who in (monitor, world.pharmacist_berlin, world.pharmacist_tokyo, coordinator):
        sign_in(client, who)
        listing = client.get(changelist)
        seen[who.username] = (
            listing.status_code,
            [str(row) for row in listing.context["cl"].result_list]
            if listing.status_code == 200
            else None,
        )
    sign_in(client, monitor)
    page = client.get(entry_url)
    edit = client.post(entry_url, {"reason": "edited"})
    delete = client.post(delete_url, {"post": "yes"})
    bulk_delete = client.post(
        changelist, {"action": "delete_selected", "_selected_action": [entry.pk]}
    )

    assert seen == {
        "mona": (200, [f"emergency unblinding #{entry.pk}"]),
        "pharmacist-berlin": (200, [f"emergency unblinding #{entry.pk}"]),
        # Tokyo's pharmacist reads the entries of Tokyo's participants only.
        "pharmacist-tokyo": (200, []),
        "cora": (403, None),
    }
    assert page.status_code == 200
    assert REASON in page.content.decode()
    # The monitor stays blinded: the entry shows who, whom and why, never the arm.
    assert arms_shown(page) == []
    assert (edit.status_code, delete.status_code) == (403, 403)
    assert bulk_delete.status_code == 200
    assert EmergencyUnblinding.objects.get().reason == REASON


def test_each_pharmacist_reads_their_own_notice_only(
    client, world, django_capture_on_commit_callbacks
) -> None:
    sign_in(client, world.investigator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(unblind_url(world.unblinded), {"password": PASSWORD, "reason": REASON})
    changelist = reverse("admin:scheduler_unblindingnotice_changelist")

    sign_in(client, world.pharmacist_tokyo)
    tokyo = client.get(changelist)
    sign_in(client, world.investigator)
    investigator = client.get(changelist)

    assert [n.recipient for n in tokyo.context["cl"].result_list] == [world.pharmacist_tokyo]
    assert investigator.status_code == 403


def test_wrong_passwords_count_against_the_account_and_lock_unblinding_and_sign_in(
    client, world, settings, django_capture_on_commit_callbacks
) -> None:
    """Each wrong password re-entered counts as a failed sign-in (django-axes): after
    AXES_FAILURE_LIMIT the account is locked, the form refuses even the right password and
    nothing is unblinded, and signing in again is refused too."""
    settings.AXES_FAILURE_LIMIT = 3
    sign_in(client, world.investigator)
    wrong = [
        client.post(unblind_url(world.unblinded), {"password": f"guess {n}", "reason": REASON})
        for n in range(3)
    ]
    assert [error_of(r) for r in wrong[:2]] == [
        "That is not your password: nothing was unblinded."
    ] * 2
    # The guess that reaches the limit gets the sign-in's own lockout page.
    assert wrong[2].status_code == 429
    assert "<title>Account locked" in wrong[2].content.decode()
    assert arms_shown(wrong[2]) == []
    locked = (
        "Too many wrong passwords for this account: it is locked until 2026-02-20 12:30 UTC "
        "(signing in too). Nothing was unblinded."
    )

    with django_capture_on_commit_callbacks(execute=True):
        right = client.post(unblind_url(world.unblinded), {"password": PASSWORD, "reason": REASON})

    assert right.status_code == 200
    assert error_of(right) == locked
    assert arms_shown(right) == []
    assert nothing_written() == (0, 0, 0)
    client.logout()
    again = client.post(
        "/admin/login/",
        {"username": world.investigator.get_username(), "password": PASSWORD},
    )
    assert again.status_code == 429


def test_a_right_password_after_wrong_ones_still_unblinds_below_the_limit(
    client, world, django_capture_on_commit_callbacks
) -> None:
    sign_in(client, world.investigator)
    client.post(unblind_url(world.unblinded), {"password": "guess", "reason": REASON})

    with django_capture_on_commit_callbacks(execute=True):
        right = client.post(unblind_url(world.unblinded), {"password": PASSWORD, "reason": REASON})

    assert right.status_code == 200
    assert right.templates[0].name == "admin/unblinding/result.html"
