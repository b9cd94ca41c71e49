"""The rest of the lifecycle through the API: unscheduled visits, anchors, taper decisions,
protocol versions and site approvals, reminders and calendar feeds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from rest_framework.test import APIClient

from participants.models import ParticipantAnchor
from scheduler.api.models import IdempotencyRecord
from scheduler.models import (
    CalendarFeed,
    Membership,
    Reminder,
    ScheduledMilestone,
    ScheduledVisit,
    TaperAdjustment,
)
from tests.api.conftest import World
from trials.models import TrialSite


def _etag(client: APIClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return str(response["ETag"])


def _post(client: APIClient, url: str, body: Any, *, etag: str | None, key: str) -> Any:
    headers: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": key}
    if etag is not None:
        headers["HTTP_IF_MATCH"] = etag
    return client.post(url, body, format="json", **headers)


@pytest.mark.django_db
def test_an_unscheduled_visit_is_added_once_with_its_procedures(world: World) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    url = f"/api/v1/participants/{participant.pk}/unscheduled-visits/"
    body = {"local_date": "2026-01-22", "reason": "flare", "procedures": ["CAVI"]}
    etag = _etag(client, f"/api/v1/participants/{participant.pk}/")

    first = _post(client, url, body, etag=etag, key="flare-1")
    again = _post(client, url, body, etag=etag, key="flare-1")

    assert first.status_code == 201, first.content
    visit = first.json()
    assert again.json() == visit
    assert again["Idempotent-Replayed"] == "true"
    assert first["Location"] == f"/api/v1/visits/{visit['id']}/"
    assert (visit["unscheduled_reason"], visit["status"], visit["target_date"]) == (
        "flare",
        "planned",
        "2026-01-22",
    )
    assert [p["code"] for p in visit["procedures"]] == ["CAVI"]
    assert (
        ScheduledVisit.objects.filter(participant=participant, unscheduled_reason="flare").count()
        == 1
    )


@pytest.mark.django_db
def test_an_unscheduled_visit_with_an_unknown_procedure_is_refused(world: World) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    etag = _etag(client, f"/api/v1/participants/{participant.pk}/")

    response = _post(
        client,
        f"/api/v1/participants/{participant.pk}/unscheduled-visits/",
        {"local_date": "2026-01-22", "reason": "flare", "procedures": ["XRAY9"]},
        etag=etag,
        key="flare-2",
    )

    assert response.status_code == 422
    assert response.json()["type"] == "/api/v1/problems/refused"
    assert response.json()["detail"].startswith("unknown procedure(s) XRAY9")


@pytest.mark.django_db
def test_an_anchor_change_is_previewed_then_confirmed(world: World) -> None:
    client = world.client("investigator")
    participant = world.people["BERLIN-001"]
    base = f"/api/v1/participants/{participant.pk}/anchors/day1/"
    v2 = world.visit("BERLIN-001", "V2")
    old_target = v2.target_date

    preview = client.post(base + "preview/", {"date": "2026-02-09"}, format="json")
    assert preview.status_code == 200, preview.content
    body = preview.json()
    moved = {(c["visit_code"], c["occurrence"]): c for c in body["result"]["visits"]}
    assert moved[("V2", 1)]["new_target"] == (old_target + dt.timedelta(days=7)).isoformat()
    confirm = _post(
        client,
        base,
        {"date": "2026-02-09", "reason": "infusion slot", "preview_digest": body["preview_digest"]},
        etag=body["participant_etag"],
        key="day1-move",
    )

    assert confirm.status_code == 200, confirm.content
    assert confirm.json()["result"] == body["result"]
    assert confirm.json()["participant"]["anchors"]["day1"] == "2026-02-09"
    assert confirm["ETag"] == confirm.json()["participant"]["etag"] != body["participant_etag"]
    assert ParticipantAnchor.objects.get(participant=participant, code="day1").date == dt.date(
        2026, 2, 9
    )
    v2.refresh_from_db()
    assert v2.target_date == old_target + dt.timedelta(days=7)


@pytest.mark.django_db
def test_an_anchor_change_unlike_its_preview_writes_nothing(world: World) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    base = f"/api/v1/participants/{participant.pk}/anchors/day1/"
    preview = client.post(base + "preview/", {"date": "2026-02-09"}, format="json").json()

    response = _post(
        client,
        base,
        {"date": "2026-02-16", "reason": "slot", "preview_digest": preview["preview_digest"]},
        etag=preview["participant_etag"],
        key="day1-other",
    )

    assert response.status_code == 409
    assert response.json()["type"] == "/api/v1/problems/preview-outdated"
    assert ParticipantAnchor.objects.get(participant=participant, code="day1").date == dt.date(
        2026, 2, 2
    )
    assert not IdempotencyRecord.objects.filter(key="day1-other").exists()


@pytest.mark.django_db
def test_an_unknown_anchor_is_refused(world: World) -> None:
    participant = world.people["BERLIN-001"]

    response = world.client("coordinator").post(
        f"/api/v1/participants/{participant.pk}/anchors/psl_start/preview/",
        {"date": "2026-02-09"},
        format="json",
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("'psl_start' is not an anchor of")


@pytest.fixture
def osaka_coordinator(world: World, django_user_model) -> APIClient:
    user = django_user_model.objects.create_user("coordinator-osaka")
    Membership.objects.create(
        user=user, trial=world.other_trial, site=world.osaka, role=Membership.Role.COORDINATOR
    )
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_a_taper_hold_is_previewed_then_confirmed(world: World, osaka_coordinator) -> None:
    participant = world.people["OSAKA-001"]
    base = f"/api/v1/participants/{participant.pk}/taper-decisions/"
    decision = {"milestone_code": "PSL_TAPER", "week": 3}

    preview = osaka_coordinator.post(base + "preview/", decision, format="json")
    assert preview.status_code == 200, preview.content
    body = preview.json()
    confirm = _post(
        osaka_coordinator,
        base,
        {**decision, "reason": "flare", "preview_digest": body["preview_digest"]},
        etag=body["participant_etag"],
        key="hold-3",
    )

    assert confirm.status_code == 200, confirm.content
    assert confirm.json()["result"] == body["result"]
    assert body["result"]["milestones"] != []
    adjustment = TaperAdjustment.objects.get(participant=participant)
    assert (adjustment.week, adjustment.kind, adjustment.dose_mg) == (3, "hold", None)


@pytest.mark.django_db
def test_a_dose_off_the_tablet_step_is_refused_by_the_service(
    world: World, osaka_coordinator
) -> None:
    participant = world.people["OSAKA-001"]

    response = osaka_coordinator.post(
        f"/api/v1/participants/{participant.pk}/taper-decisions/preview/",
        {"milestone_code": "PSL_TAPER", "week": 3, "dose_mg": "12.5"},
        format="json",
    )

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "12.5 mg is not a multiple of the 1 mg tablet; prescribe 12 mg or 13 mg"
    )
    assert ScheduledMilestone.objects.filter(participant=participant).exists()
    assert not TaperAdjustment.objects.exists()


@pytest.mark.django_db
def test_a_move_to_an_unknown_version_names_the_field(world: World) -> None:
    participant = world.people["BERLIN-001"]

    response = world.client("coordinator").post(
        f"/api/v1/participants/{participant.pk}/protocol-version/preview/",
        {"version": "9.9", "on": "2026-02-01"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "version", "message": "no published version '9.9' of niams-ani-vascular"}
    ]


@pytest.mark.django_db
def test_a_site_approval_is_recorded_with_if_match(world: World) -> None:
    client = world.client("coordinator")
    url = "/api/v1/trials/niams-ani-vascular/sites/berlin/approval/"
    etag = _etag(client, url)
    body = {"version": "1.0", "approved_on": "2026-01-15", "on": "2026-01-20", "reason": "v1"}

    stale = _post(client, url, body, etag='"stale"', key="approve-stale")
    response = _post(client, url, body, etag=etag, key="approve-1")

    assert stale.status_code == 412
    assert response.status_code == 200, response.content
    assert response.json() == {
        "approval": {
            "trial": "niams-ani-vascular",
            "site": "berlin",
            "protocol_version": "1.0",
            "approved_on": "2026-01-15",
            "etag": response["ETag"],
        },
        "moved": [],
    }
    trial_site = TrialSite.objects.get(trial=world.trial, site=world.berlin)
    assert trial_site.approved_on == dt.date(2026, 1, 15)


@pytest.mark.django_db
def test_a_site_approval_before_the_approval_date_is_refused(world: World) -> None:
    client = world.client("site_system")
    url = "/api/v1/trials/niams-ani-vascular/sites/berlin/approval/"
    body = {"version": "1.0", "approved_on": "2026-01-15", "on": "2026-01-10", "reason": "v1"}

    response = _post(client, url, body, etag=_etag(client, url), key="approve-early")

    assert response.status_code == 422
    assert TrialSite.objects.get(trial=world.trial, site=world.berlin).approved_on is None


def _dead_reminder(world: World) -> Reminder:
    reminder = (
        Reminder.objects.filter(participant=world.people["BERLIN-001"], visit__isnull=False)
        .order_by("id")
        .first()
    )
    assert reminder is not None
    Reminder.objects.filter(pk=reminder.pk).update(
        status=Reminder.Status.DEAD, attempts=5, last_error="mailbox full"
    )
    reminder.refresh_from_db()
    return reminder


@pytest.mark.django_db
def test_reminders_are_listed_and_errors_shown_only_to_contact_roles(world: World) -> None:
    reminder = _dead_reminder(world)
    participant = world.people["BERLIN-001"]
    url = f"/api/v1/participants/{participant.pk}/reminders/?page_size=200"

    as_coordinator = world.client("coordinator").get(url).json()["results"]
    as_system = world.client("site_system").get(url).json()["results"]
    by_visit = world.client("coordinator").get(f"/api/v1/visits/{reminder.visit_id}/reminders/")

    dead = [r for r in as_coordinator if r["id"] == reminder.pk]
    assert [(r["status"], r["last_error"]) for r in dead] == [("dead", "mailbox full")]
    assert {r["last_error"] for r in as_system} == {None}
    assert len(as_coordinator) == Reminder.objects.filter(participant=participant).count()
    assert reminder.pk in [r["id"] for r in by_visit.json()["results"]]


@pytest.mark.django_db
def test_a_dead_reminder_is_retried_once(world: World) -> None:
    reminder = _dead_reminder(world)
    client = world.client("site_system")
    url = f"/api/v1/reminders/{reminder.pk}/retry/"
    etag = _etag(client, f"/api/v1/reminders/{reminder.pk}/")

    first = _post(client, url, None, etag=etag, key="retry-1")
    again = _post(client, url, None, etag=etag, key="retry-1")
    second = _post(client, url, None, etag=first["ETag"], key="retry-2")

    assert first.status_code == 200, first.content
    assert (first.json()["status"], first.json()["attempts"]) == ("pending", 0)
    assert again.json() == first.json()
    assert second.status_code == 422
    assert second.json()["detail"] == (
        "only failed or dead reminders are retried; this one is pending"
    )


@pytest.mark.django_db
def test_a_feed_url_is_shown_once_and_the_feed_revoked(world: World) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    url = f"/api/v1/participants/{participant.pk}/feeds/"

    issued = _post(client, url, None, etag=None, key="feed-1")
    replayed = _post(client, url, None, etag=None, key="feed-1")

    assert issued.status_code == 201, issued.content
    feed = issued.json()
    assert feed["url"].startswith("http://127.0.0.1:8000/feeds/participant/")
    assert replayed.json() == {**feed, "url": None}
    assert CalendarFeed.objects.filter(participant=participant).count() == 1
    assert "feeds/participant" not in str(IdempotencyRecord.objects.get(key="feed-1").response_body)
    path = feed["url"].removeprefix("http://127.0.0.1:8000")
    assert APIClient().get(path).status_code == 200
    listed = client.get(url).json()["results"]
    assert [f["id"] for f in listed] == [feed["id"]]

    revoked = _post(client, f"/api/v1/feeds/{feed['id']}/revoke/", None, etag=feed["etag"], key="r")

    assert revoked.status_code == 200, revoked.content
    assert revoked.json()["revoked_at"] is not None
    assert APIClient().get(path).status_code == 404


@pytest.mark.django_db
def test_reminder_and_feed_lists_query_counts_do_not_grow_with_the_rows(world: World) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scheduler.calendars.feeds import feed_create

    participant = world.people["BERLIN-001"]
    client = world.client("coordinator")

    def count(url: str) -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, response.content
        return len(queries), len(response.json()["results"])

    reminders = f"/api/v1/participants/{participant.pk}/reminders/?page_size="
    feeds = f"/api/v1/participants/{participant.pk}/feeds/"
    feed_create(participant=participant)
    client.get(feeds)  # the memberships are read once per user object (cached on it)
    small = {"reminders": count(reminders + "2"), "feeds": count(feeds)}
    for _ in range(4):
        feed_create(participant=participant)
    large = {"reminders": count(reminders + "40"), "feeds": count(feeds)}

    assert {k: rows for k, (_, rows) in small.items()} == {"reminders": 2, "feeds": 1}
    assert {k: rows for k, (_, rows) in large.items()} == {"reminders": 40, "feeds": 5}
    assert {k: q for k, (q, _) in large.items()} == {k: q for k, (q, _) in small.items()}
