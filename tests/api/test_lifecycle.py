"""The rest of the lifecycle through the API: unscheduled visits, anchors, taper decisions,
protocol versions and site approvals, reminders and calendar feeds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from rest_framework.test import APIClient
from simple_history.utils import get_history_model_for_model

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
from tests.conftest import seed_path
from tests.factories import participant_for
from trials.models import ProtocolVersion, TrialSite
from trials.services import protocol_import


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


NIAMS_V12 = """\
  - code: V12
    name: Late safety follow-up
    epoch: FU
    anchor: {visit: V10}
    offset_days: 56
    window: {before: 7, after: 7}
    duration_minutes: 60
    procedures: [EXAM]
milestones:
"""
APPROVAL = "/api/v1/trials/niams-ani-vascular/sites/berlin/approval/"


def niams_amendment() -> Any:
    """NIAMS 1.1: a late safety follow-up (V12) eight weeks after the last treatment visit."""
    text = seed_path("000").read_text(encoding="utf-8")
    amended = text.replace('label: "1.0"', 'label: "1.1"').replace("milestones:\n", NIAMS_V12, 1)
    return protocol_import(text=amended, source="niams-1.1.yaml")


def _preview_approval(client: APIClient, body: dict[str, Any]) -> Any:
    return client.post(APPROVAL + "preview/", body, format="json")


APPROVE_11 = {"version": "1.1", "approved_on": "2026-01-15", "on": "2026-01-20"}


@pytest.mark.django_db
def test_a_site_approval_preview_says_who_moves_and_what_changes(world: World) -> None:
    niams_amendment()
    client = world.client("coordinator")
    etag = _etag(client, APPROVAL)

    preview = _preview_approval(client, APPROVE_11)

    assert preview.status_code == 200, preview.content
    assert preview["ETag"] == etag
    body = preview.json()
    assert body["approval_etag"] == etag
    assert len(body["preview_digest"]) == 64
    result = body["result"]
    assert (result["before"], result["after"]) == (
        {"protocol_version": None, "approved_on": None},
        {"protocol_version": "1.1", "approved_on": "2026-01-15"},
    )
    # Only BERLIN-001 moves (Tokyo's participant is another site's); its open visits are
    # re-planned under 1.1 on the same dates, and V12 is added eight weeks after V10.
    [moved] = result["moved"]
    assert moved["study_id"] == "BERLIN-001"
    visits = moved["calendar"]["visits"]
    assert [(v["visit_code"], v["kind"]) for v in visits] == [
        *[(f"V{n}", "changed") for n in ("2", "3", "3C", "4", "5", "6", "7", "8", "9", "10")],
        ("V11", "changed"),
        ("V12", "added"),
    ]
    assert {v["old_target"] == v["new_target"] for v in visits[:-1]} == {True}
    assert visits[-1] == {
        "visit_code": "V12",
        "occurrence": 1,
        "kind": "added",
        "old_target": None,
        "new_target": "2026-11-09",  # V10's target, 2026-09-14, + 56 days
        "old_window": None,
        "new_window": {"start": "2026-11-02", "end": "2026-11-16"},
        "booked_date": None,
        "out_of_window": False,
    }
    # A preview writes nothing.
    assert TrialSite.objects.get(trial=world.trial, site=world.berlin).approved_on is None
    assert world.people["BERLIN-001"].visits.filter(visit_definition__code="V12").count() == 0


@pytest.mark.django_db
def test_a_site_approval_confirm_writes_what_was_previewed(world: World) -> None:
    niams_amendment()
    client = world.client("coordinator")
    etag = _etag(client, APPROVAL)
    preview = _preview_approval(client, APPROVE_11).json()
    body = {**APPROVE_11, "reason": "amendment 1", "preview_digest": preview["preview_digest"]}

    stale = _post(client, APPROVAL, body, etag='"stale"', key="approve-stale")
    response = _post(client, APPROVAL, body, etag=etag, key="approve-1")
    again = _post(client, APPROVAL, body, etag=etag, key="approve-1")

    assert stale.status_code == 412
    assert response.status_code == 200, response.content
    assert response.json() == {
        "approval": {
            "trial": "niams-ani-vascular",
            "site": "berlin",
            "protocol_version": "1.1",
            "approved_on": "2026-01-15",
            "etag": response["ETag"],
        },
        "result": preview["result"],
    }
    assert again.json() == response.json()
    trial_site = TrialSite.objects.select_related("protocol_version").get(
        trial=world.trial, site=world.berlin
    )
    assert trial_site.protocol_version is not None
    assert (trial_site.protocol_version.label, trial_site.approved_on) == (
        "1.1",
        dt.date(2026, 1, 15),
    )
    berlin, tokyo = world.people["BERLIN-001"], world.people["TOKYO-001"]
    berlin.refresh_from_db()
    tokyo.refresh_from_db()
    assert (berlin.protocol_version.label, tokyo.protocol_version.label) == ("1.1", "1.0")
    assert berlin.visits.filter(visit_definition__code="V12").count() == 1
    assert [h.history_change_reason for h in trial_site.history.order_by("history_id")][-1] == (
        "amendment 1"
    )


@pytest.mark.django_db
def test_a_site_approval_confirm_after_the_site_changed_is_409(world: World) -> None:
    version = niams_amendment()
    client = world.client("coordinator")
    etag = _etag(client, APPROVAL)
    preview = _preview_approval(client, APPROVE_11).json()
    # Between the preview and the confirm, another participant is registered at Berlin: the
    # approval would move two participants, not the one previewed.
    participant_for(
        ProtocolVersion.objects.get(trial=version.trial, label="1.0"),
        anchors={"day1": dt.date(2026, 3, 2)},
        site=world.berlin,
        study_id="BERLIN-002",
    )
    body = {**APPROVE_11, "reason": "amendment 1", "preview_digest": preview["preview_digest"]}

    response = _post(client, APPROVAL, body, etag=etag, key="approve-late")

    assert response.status_code == 409
    assert response.json()["type"] == "/api/v1/problems/preview-outdated"
    assert TrialSite.objects.get(trial=world.trial, site=world.berlin).approved_on is None
    world.people["BERLIN-001"].refresh_from_db()
    assert world.people["BERLIN-001"].protocol_version.label == "1.0"
    assert ScheduledVisit.objects.filter(visit_definition__code="V12").count() == 0


@pytest.mark.django_db
def test_a_site_approval_confirm_needs_the_preview_digest(world: World) -> None:
    client = world.client("site_system")
    body = {"version": "1.0", "approved_on": "2026-01-15", "on": "2026-01-20", "reason": "v1"}

    response = _post(client, APPROVAL, body, etag=_etag(client, APPROVAL), key="no-digest")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "preview_digest", "message": "This field is required."}
    ]


@pytest.mark.django_db
def test_a_site_approval_before_the_approval_date_is_refused_at_the_preview(
    world: World,
) -> None:
    client = world.client("site_system")
    body = {"version": "1.0", "approved_on": "2026-01-15", "on": "2026-01-10"}

    response = _preview_approval(client, body)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": None,
            "message": f"{world.berlin} approved niams-ani-vascular v1.0 on 2026-01-15; "
            "participants cannot be moved onto it on 2026-01-10, before that date",
        }
    ]
    assert TrialSite.objects.get(trial=world.trial, site=world.berlin).approved_on is None


@pytest.mark.django_db
def test_a_site_approval_preview_is_for_roles_that_write_there(world: World) -> None:
    monitor = _preview_approval(world.client("sponsor_monitor"), APPROVE_11)
    tokyo = world.client("coordinator").post(
        "/api/v1/trials/niams-ani-vascular/sites/tokyo/approval/preview/",
        APPROVE_11,
        format="json",
    )
    get = world.client("coordinator").get(APPROVAL + "preview/")

    assert (monitor.status_code, monitor.json()["detail"]) == (
        403,
        "your role may not record approvals at this site",
    )
    assert (tokyo.status_code, tokyo.json()["detail"]) == (404, "no such site of this trial")
    assert get.status_code == 405


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


@pytest.mark.django_db
def test_a_site_feed_is_issued_once_per_key_and_revoked(world: World) -> None:
    client = world.client("coordinator")
    url = "/api/v1/sites/berlin/feeds/"

    issued = _post(client, url, None, etag=None, key="site-feed-1")
    replayed = _post(client, url, None, etag=None, key="site-feed-1")

    assert issued.status_code == 201, issued.content
    feed = issued.json()
    assert feed["url"].startswith("http://127.0.0.1:8000/feeds/site/")
    assert {k: v for k, v in feed.items() if k != "url"} == {
        "id": feed["id"],
        "participant": None,
        "site": "berlin",
        "created_at": "2026-01-20T08:00:00Z",
        "revoked_at": None,
        "etag": f'"feed-{feed["id"]}-active"',
    }
    assert issued["Cache-Control"] == "no-store"
    assert replayed.json() == {**feed, "url": None}
    assert CalendarFeed.objects.filter(site=world.berlin).count() == 1
    record = IdempotencyRecord.objects.get(key="site-feed-1")
    assert "feeds/site" not in str(record.response_body)
    path = feed["url"].removeprefix("http://127.0.0.1:8000")
    assert APIClient().get(path).status_code == 200
    assert [f["id"] for f in client.get(url).json()["results"]] == [feed["id"]]

    revoked = _post(client, f"/api/v1/feeds/{feed['id']}/revoke/", None, etag=feed["etag"], key="r")

    assert revoked.status_code == 200, revoked.content
    assert APIClient().get(path).status_code == 404


@pytest.mark.django_db
def test_a_site_feed_is_issued_only_by_a_role_that_writes_at_the_site(world: World) -> None:
    def issue(role: str, site: str) -> Any:
        return _post(world.client(role), f"/api/v1/sites/{site}/feeds/", None, etag=None, key=role)

    monitor = issue("sponsor_monitor", "berlin")
    other_site = issue("coordinator", "tokyo")
    other_trial = issue("site_system", "osaka")
    pharmacist = issue("unblinded_pharmacist", "berlin")

    assert (monitor.status_code, monitor.json()["detail"]) == (
        403,
        "your role may read this site but not issue feeds",
    )
    assert (pharmacist.status_code, pharmacist.json()["type"]) == (
        403,
        "/api/v1/problems/permission-denied",
    )
    assert [(r.status_code, r.json()["detail"]) for r in (other_site, other_trial)] == [
        (404, "no such site"),
        (404, "no such site"),
    ]
    assert not CalendarFeed.objects.filter(site__isnull=False).exists()
    # The monitor reads every NIAMS site's feeds list; Tokyo's coordinator-less list is empty.
    assert world.client("sponsor_monitor").get("/api/v1/sites/tokyo/feeds/").json()["results"] == []
    assert world.client("coordinator").get("/api/v1/sites/tokyo/feeds/").status_code == 404


@pytest.mark.django_db
def test_a_reminder_retried_through_the_api_is_audited(world: World) -> None:
    reminder = _dead_reminder(world)
    client = world.client("site_system")
    etag = _etag(client, f"/api/v1/reminders/{reminder.pk}/")

    response = _post(client, f"/api/v1/reminders/{reminder.pk}/retry/", None, etag=etag, key="k")

    assert response.status_code == 200, response.content
    entries = [
        (h.history_user, h.history_change_reason, h.status, h.attempts)
        for h in get_history_model_for_model(Reminder).objects.filter(id=reminder.pk)
    ]
    assert entries == [(world.users["site_system"], "retried through the API", "pending", 0)]
