"""Who read which participant's record: one row per page shown (admin page, timeline,
emergency unblinding, API participant and calendar), one per export with its filter and row
count, none per row of a list; reviewed by auditors only (scheduler/audittrail.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from scheduler.models import ScheduledVisit, SecurityEvent
from tests.audit.conftest import NOW, World
from tests.conftest import sign_in

pytestmark = pytest.mark.django_db
FIELDS = ("at", "kind", "username", "ip_address", "participant_id", "surface", "detail")
AUDIT = reverse("admin:scheduler_securityevent_changelist")


def reads() -> list[dict[str, Any]]:
    """The record views and exports, oldest first."""
    rows = SecurityEvent.objects.filter(kind__in=["view", "export"]).order_by("id")
    return list(rows.values(*FIELDS))


def view(user: str, participant: Any, surface: str, page: str) -> dict[str, Any]:
    return {
        "at": NOW,
        "kind": "view",
        "username": user,
        "ip_address": "127.0.0.1",
        "participant_id": participant.pk,
        "surface": surface,
        "detail": {"page": page},
    }


def signed_in(user: Any) -> Client:
    return sign_in(Client(), user)


def test_the_admin_page_of_a_participant_records_one_view(world: World) -> None:
    url = reverse("admin:participants_participant_change", args=[world.participant.pk])

    assert signed_in(world.coordinator).get(url).status_code == 200

    assert reads() == [view("coordinator", world.participant, "admin", "change")]


def test_the_timeline_records_one_view_with_one_insert(world: World) -> None:
    url = reverse("admin:participants_participant_timeline", args=[world.participant.pk])
    client = signed_in(world.coordinator)

    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200

    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT INTO")]
    assert [sql.split("(")[0].strip() for sql in inserts] == [
        'INSERT INTO "scheduler_securityevent"'
    ]
    assert reads() == [view("coordinator", world.participant, "admin", "timeline")]


def test_the_emergency_unblinding_page_records_one_view(world: World) -> None:
    url = reverse("admin:participants_participant_emergency_unblind", args=[world.participant.pk])

    assert signed_in(world.investigator).get(url).status_code == 200

    assert reads() == [view("investigator", world.participant, "admin", "emergency_unblinding")]


def test_the_api_participant_and_calendar_record_one_view_each(world: World) -> None:
    client = APIClient()
    client.force_authenticate(world.coordinator)

    detail = client.get(reverse("api:participant-detail", args=[world.participant.pk]))
    calendar = client.get(reverse("api:participant-calendar", args=[world.participant.pk]))

    assert (detail.status_code, calendar.status_code) == (200, 200)
    assert reads() == [
        view("coordinator", world.participant, "api", "participant"),
        view("coordinator", world.participant, "api", "calendar"),
    ]


def test_a_csv_export_is_one_row_with_its_filter_and_row_count(world: World) -> None:
    planned = ScheduledVisit.objects.filter(
        participant=world.participant, status=ScheduledVisit.Status.PLANNED
    ).count()
    client = signed_in(world.coordinator)

    response = client.get(
        reverse("admin:scheduler_scheduledvisit_export") + "?status__exact=planned"
    )
    lines = b"".join(response.streaming_content).decode().splitlines()  # type: ignore[attr-defined]

    assert planned > 1
    assert len(lines) == planned + 1  # the header, then one line per visit
    assert reads() == [
        {
            "at": NOW,
            "kind": "export",
            "username": "coordinator",
            "ip_address": "127.0.0.1",
            "participant_id": None,
            "surface": "export",
            "detail": {"export": "visits", "filter": "status__exact=planned", "rows": planned},
        }
    ]


def test_the_history_of_a_participant_and_of_a_visit_and_a_past_version_record_views(
    world: World,
) -> None:
    client = signed_in(world.coordinator)
    participant = world.participant
    visit = ScheduledVisit.objects.filter(participant=participant).order_by("id").first()
    assert visit is not None
    version = visit.history.order_by("history_id").first()
    assert version is not None
    pages = [
        reverse("admin:participants_participant_history", args=[participant.pk]),
        reverse("admin:scheduler_scheduledvisit_history", args=[visit.pk]),
        reverse(
            "admin:scheduler_scheduledvisit_simple_history",
            args=[visit.pk, version.history_id],
        ),
    ]

    for url in pages:
        assert client.get(url).status_code == 200

    assert reads() == [
        view("coordinator", participant, "admin", "history"),
        view("coordinator", participant, "admin", "history"),
        view("coordinator", participant, "admin", "past version"),
    ]


def test_lists_and_refused_pages_record_nothing(world: World) -> None:
    client = signed_in(world.coordinator)
    elsewhere = reverse("admin:participants_participant_change", args=[world.elsewhere.pk])
    api = APIClient()
    api.force_authenticate(world.coordinator)

    assert client.get(reverse("admin:participants_participant_changelist")).status_code == 200
    assert client.get(reverse("admin:scheduler_scheduledvisit_changelist")).status_code == 200
    assert client.get(elsewhere).status_code == 404
    history = reverse("admin:participants_participant_history", args=[world.elsewhere.pk])
    assert client.get(history).status_code == 404
    assert (
        api.get(reverse("api:participant-calendar", args=[world.elsewhere.pk])).status_code == 404
    )

    assert reads() == []


def test_an_auditor_reviews_the_views_filtered_by_user_participant_and_surface(
    world: World,
) -> None:
    signed_in(world.coordinator).get(
        reverse("admin:participants_participant_timeline", args=[world.participant.pk])
    )
    api = APIClient()
    api.force_authenticate(world.investigator)
    api.get(reverse("api:participant-calendar", args=[world.participant.pk]))
    auditor = signed_in(world.auditor)

    def listed(query: str) -> list[tuple[str, str, int | None, str]]:
        response = auditor.get(f"{AUDIT}?kind__exact=view&{query}")
        assert response.status_code == 200, query
        return [
            (e.username, e.surface, e.participant_id, e.detail["page"])
            for e in response.context["cl"].result_list
        ]

    pk = world.participant.pk
    assert listed("") == [
        ("investigator", "api", pk, "calendar"),
        ("coordinator", "admin", pk, "timeline"),
    ]
    assert listed("username=coordinator") == [("coordinator", "admin", pk, "timeline")]
    assert listed("surface__exact=api") == [("investigator", "api", pk, "calendar")]
    assert listed(f"participant_id={world.elsewhere.pk}") == []
    assert listed(f"participant_id={pk}&at__year=2026&at__month=1&at__day=20") == [
        ("investigator", "api", pk, "calendar"),
        ("coordinator", "admin", pk, "timeline"),
    ]
    assert listed("participant_id=not-a-number") == []


def test_the_auditors_list_is_read_only(world: World) -> None:
    signed_in(world.coordinator).get(
        reverse("admin:participants_participant_timeline", args=[world.participant.pk])
    )
    event = SecurityEvent.objects.get(kind="view")
    auditor = signed_in(world.auditor)
    change = reverse("admin:scheduler_securityevent_change", args=[event.pk])
    delete = reverse("admin:scheduler_securityevent_delete", args=[event.pk])

    page = auditor.get(change)
    posted = auditor.post(change, {"username": "someone-else"})

    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert (posted.status_code, auditor.get(delete).status_code) == (403, 403)
    assert auditor.get(reverse("admin:scheduler_securityevent_add")).status_code == 403
    assert SecurityEvent.objects.get(pk=event.pk).username == "coordinator"


def test_a_coordinator_sees_no_audit_and_a_superuser_does(
    world: World, django_user_model: Any
) -> None:
    root = django_user_model.objects.create_superuser("root", password="a-long-passphrase")
    coordinator = signed_in(world.coordinator)

    assert coordinator.get(AUDIT).status_code == 403
    index = coordinator.get(reverse("admin:index"))
    assert AUDIT.encode() not in index.content
    # A superuser holds every permission: Django's has_perm says yes to the auditor's too,
    # so a superuser reviews the audit (and is a user manager, which requires a second factor).
    assert sign_in(Client(), root).get(AUDIT).status_code == 200


def test_the_auditors_list_is_in_japanese(world: World) -> None:
    auditor = signed_in(world.auditor)

    page = auditor.get(AUDIT, HTTP_ACCEPT_LANGUAGE="ja").content.decode()

    assert "セキュリティイベント" in page
    assert "日時（UTC）" in page
