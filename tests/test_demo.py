from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from participants.models import Participant
from scheduler.models import ScheduledVisit
from tests.conftest import PROTOCOL_DIR
from trials.models import ProtocolVersion, Trial


@pytest.mark.django_db
def test_load_demo_loads_every_seed_protocol_and_enrolls_demo_participants() -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    assert ProtocolVersion.objects.count() == len(list(PROTOCOL_DIR.glob("*.yaml")))
    assert sorted(Trial.objects.values_list("code", flat=True)) == [
        "ani-lupus-nephritis",
        "ani-pediatric-sle",
        "ani-vitiligo-nbuvb",
        "jasmine-myositis",
        "lavender-cle",
        "niams-ani-vascular",
        "tsukuba-early-ani",
    ]
    assert {
        trial.code: trial.participants.filter(status="enrolled").count()
        for trial in Trial.objects.all()
    } == dict.fromkeys(Trial.objects.values_list("code", flat=True), 3)


@pytest.mark.django_db
def test_load_demo_twice_changes_nothing() -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    counts = (Participant.objects.count(), ScheduledVisit.objects.count())

    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    assert (Participant.objects.count(), ScheduledVisit.objects.count()) == counts


@pytest.mark.django_db
def test_load_demo_gives_calendars_a_past_and_a_next_booking() -> None:
    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    statuses = set(ScheduledVisit.objects.values_list("status", flat=True))
    assert statuses == {"planned", "booked", "done"}
    assert ScheduledVisit.objects.filter(status="booked").count() == Participant.objects.count()


@pytest.mark.django_db
def test_load_demo_creates_a_login_per_role_and_keeps_their_passwords(settings, tmp_path) -> None:
    settings.VAR_DIR = tmp_path
    first = io.StringIO()
    call_command("load_demo", stdout=first)
    passwords = (tmp_path / "demo-logins.txt").read_text()

    call_command("load_demo", stdout=io.StringIO())

    roles = {
        user.username: sorted(
            (m.trial.code, m.site.code if m.site else None, m.role) for m in user.memberships.all()
        )
        for user in get_user_model().objects.exclude(username="admin")
    }
    assert len(roles) == 3 * 4 + Trial.objects.count() * 2
    assert roles["coordinator-tsukuba"] == [
        ("jasmine-myositis", "tsukuba", "coordinator"),
        ("tsukuba-early-ani", "tsukuba", "coordinator"),
    ]
    assert roles["monitor-niams-ani-vascular"] == [("niams-ani-vascular", None, "sponsor_monitor")]
    assert (tmp_path / "demo-logins.txt").read_text() == passwords
    assert oct((tmp_path / "demo-logins.txt").stat().st_mode & 0o777) == "0o600"
    password = dict(line.split(" ") for line in passwords.splitlines())["pharmacist-nih-cc"]
    assert f"user {'pharmacist-nih-cc':<36} password {password}" in first.getvalue()
    assert get_user_model().objects.get(username="pharmacist-nih-cc").check_password(password)
    assert get_user_model().objects.get(username="system-berlin").is_staff is False
