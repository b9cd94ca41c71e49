"""Lifecycle operations through the API: preview -> confirm, If-Match, Idempotency-Key."""

from __future__ import annotations

import datetime as dt

import pytest

from participants.models import Participant
from scheduler.api.models import IdempotencyRecord
from scheduler.models import ScheduledVisit
from tests.api.conftest import World


def problem(status: int, slug: str, detail: str, errors: list[dict[str, str | None]]) -> dict:
    return {
        "type": f"/api/v1/problems/{slug}",
        "title": {
            "invalid-input": "Invalid input",
            "precondition-required": "Precondition required",
            "precondition-failed": "Precondition failed",
            "preview-outdated": "Preview outdated",
            "idempotency-key-reused": "Idempotency key reused",
            "permission-denied": "Permission denied",
            "refused": "Refused",
        }[slug],
        "status": status,
        "detail": detail,
        "errors": errors,
    }


def _preview_booking(client, visit: ScheduledVisit, **body) -> dict:
    response = client.post(f"/api/v1/visits/{visit.pk}/book/preview/", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db
def test_book_preview_then_confirm_writes_what_was_previewed(world: World) -> None:
    client = world.client("site_system")
    visit = world.visit("BERLIN-001", "V2")
    slot = {"local_date": "2026-02-02", "local_time": "09:30"}

    preview = _preview_booking(client, visit, **slot)
    assert preview["visit_etag"] == f'"visit-{visit.pk}-v1"'
    assert preview["result"]["booked_start"] == "2026-02-02T08:30:00Z"  # 09:30 in Berlin (CET)
    assert preview["result"]["deviation_days"] == 0
    response = client.post(
        f"/api/v1/visits/{visit.pk}/book/",
        {**slot, "preview_digest": preview["preview_digest"]},
        format="json",
        HTTP_IF_MATCH=preview["visit_etag"],
        HTTP_IDEMPOTENCY_KEY="book-v2-1",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["result"] == preview["result"]
    assert body["visit"]["status"] == "booked"
    assert body["visit"]["glance_status"] == "booked"
    assert body["visit"]["booked_date"] == "2026-02-02"
    assert response["ETag"] == f'"visit-{visit.pk}-v2"' == body["visit"]["etag"]
    visit.refresh_from_db()
    assert (visit.status, visit.version) == ("booked", 2)


@pytest.mark.django_db
def test_a_retried_booking_returns_the_first_response_and_books_once(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")
    slot = {"local_date": "2026-02-02", "local_time": "10:00"}
    preview = _preview_booking(client, visit, **slot)
    request = {
        "path": f"/api/v1/visits/{visit.pk}/book/",
        "data": {**slot, "preview_digest": preview["preview_digest"]},
        "format": "json",
        "HTTP_IF_MATCH": preview["visit_etag"],
        "HTTP_IDEMPOTENCY_KEY": "0b9e6a8e-6c3f-4a43-9d55-7a1f0e7c2b10",
    }

    first = client.post(**request)
    retry = client.post(**request)

    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry["ETag"] == first["ETag"]
    assert retry["Idempotent-Replayed"] == "true"
    visit.refresh_from_db()
    assert visit.version == 2  # booked once: a second booking would be a reschedule (v3)
    assert visit.history.filter(history_change_reason="booked").count() == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db
def test_an_idempotency_key_reused_for_another_body_is_refused(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")
    preview = _preview_booking(client, visit, local_date="2026-02-02", local_time="10:00")
    common = {"format": "json", "HTTP_IF_MATCH": preview["visit_etag"]}
    client.post(
        f"/api/v1/visits/{visit.pk}/book/",
        {
            "local_date": "2026-02-02",
            "local_time": "10:00",
            "preview_digest": preview["preview_digest"],
        },
        HTTP_IDEMPOTENCY_KEY="k-1",
        **common,
    )

    response = client.post(
        f"/api/v1/visits/{visit.pk}/cancel/", {"reason": "x"}, HTTP_IDEMPOTENCY_KEY="k-1", **common
    )

    message = (
        f"this Idempotency-Key was first used for POST /api/v1/visits/{visit.pk}/book/ with "
        "another body; use a new key for a new request"
    )
    assert response.status_code == 422
    assert response.json() == problem(
        422, "idempotency-key-reused", message, [{"field": "Idempotency-Key", "message": message}]
    )
    visit.refresh_from_db()
    assert visit.status == "booked"


@pytest.mark.django_db
def test_a_stale_if_match_gets_412_and_changes_nothing(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")
    stale = f'"visit-{visit.pk}-v1"'
    ScheduledVisit.objects.filter(pk=visit.pk).update(version=2)  # someone else changed it

    response = client.post(
        f"/api/v1/visits/{visit.pk}/cancel/",
        {"reason": "not needed"},
        format="json",
        HTTP_IF_MATCH=stale,
        HTTP_IDEMPOTENCY_KEY="cancel-1",
    )

    message = (
        f'the object changed since you read it: its ETag is now "visit-{visit.pk}-v2"; read it '
        "again and retry"
    )
    assert response.status_code == 412
    assert response["Content-Type"] == "application/problem+json"
    assert response.json() == problem(
        412, "precondition-failed", message, [{"field": "If-Match", "message": message}]
    )
    visit.refresh_from_db()
    assert (visit.status, visit.version) == ("planned", 2)
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db
def test_a_change_without_if_match_or_idempotency_key_is_refused(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")
    url = f"/api/v1/visits/{visit.pk}/cancel/"

    no_key = client.post(url, {"reason": "x"}, format="json", HTTP_IF_MATCH=visit_etag(visit))
    no_match = client.post(url, {"reason": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    key_message = "this request creates or acts: send an Idempotency-Key header (a new UUID)"
    assert (no_key.status_code, no_key.json()) == (
        400,
        problem(
            400,
            "invalid-input",
            key_message,
            [{"field": "Idempotency-Key", "message": key_message}],
        ),
    )
    match_message = "send If-Match with the ETag of the copy you are changing (not *)"
    assert (no_match.status_code, no_match.json()) == (
        428,
        problem(
            428,
            "precondition-required",
            match_message,
            [{"field": "If-Match", "message": match_message}],
        ),
    )
    visit.refresh_from_db()
    assert visit.status == "planned"


def visit_etag(visit: ScheduledVisit) -> str:
    return f'"visit-{visit.pk}-v{visit.version}"'


@pytest.mark.django_db
def test_a_confirm_that_differs_from_its_preview_writes_nothing(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")
    preview = _preview_booking(client, visit, local_date="2026-02-02", local_time="09:30")

    response = client.post(
        f"/api/v1/visits/{visit.pk}/book/",
        {
            "local_date": "2026-02-02",
            "local_time": "11:00",  # not what was previewed
            "preview_digest": preview["preview_digest"],
        },
        format="json",
        HTTP_IF_MATCH=preview["visit_etag"],
        HTTP_IDEMPOTENCY_KEY="book-other-time",
    )

    assert response.status_code == 409
    assert response.json()["type"] == "/api/v1/problems/preview-outdated"
    assert response.json()["errors"][0]["field"] == "preview_digest"
    visit.refresh_from_db()
    assert (visit.status, visit.version) == ("planned", 1)
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db
def test_a_booking_outside_the_window_needs_a_reason(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")  # window: 2026-02-02 only
    preview = _preview_booking(client, visit, local_date="2026-02-04", local_time="09:30")
    assert preview["result"]["deviation_days"] == 2

    response = client.post(
        f"/api/v1/visits/{visit.pk}/book/",
        {
            "local_date": "2026-02-04",
            "local_time": "09:30",
            "preview_digest": preview["preview_digest"],
        },
        format="json",
        HTTP_IF_MATCH=preview["visit_etag"],
        HTTP_IDEMPOTENCY_KEY="late",
    )

    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "/api/v1/problems/refused"
    assert body["errors"] == [{"field": "reason", "message": body["detail"]}]
    assert body["detail"].startswith("a reason is required: 2026-02-04 is 2 days after")


@pytest.mark.django_db
def test_record_done_mark_missed_and_cancel(world: World) -> None:
    client = world.client("investigator")
    screening = world.visit("BERLIN-001", "V1")  # window 2026-01-05 .. 2026-01-19
    preview = client.post(
        f"/api/v1/visits/{screening.pk}/record-done/preview/",
        {"actual_date": "2026-01-19"},
        format="json",
    ).json()

    done = client.post(
        f"/api/v1/visits/{screening.pk}/record-done/",
        {
            "actual_date": "2026-01-19",
            "procedures_not_done": {"CXR": "X-ray room closed"},
            "preview_digest": preview["preview_digest"],
        },
        format="json",
        HTTP_IF_MATCH=preview["visit_etag"],
        HTTP_IDEMPOTENCY_KEY="done-v1",
    )

    assert done.status_code == 200, done.content
    visit = done.json()["visit"]
    assert (visit["status"], visit["glance_status"], visit["actual_date"]) == (
        "done",
        "done",
        "2026-01-19",
    )
    assert {p["code"]: p["status"] for p in visit["procedures"]}["CXR"] == "not_done"

    v2, v3 = world.visit("BERLIN-001", "V2"), world.visit("BERLIN-001", "V3")
    missed = client.post(
        f"/api/v1/visits/{v2.pk}/mark-missed/",
        {"reason": "flu"},
        format="json",
        HTTP_IF_MATCH=visit_etag(v2),
        HTTP_IDEMPOTENCY_KEY="missed-v2",
    )
    cancelled = client.post(
        f"/api/v1/visits/{v3.pk}/cancel/",
        {"reason": "not needed"},
        format="json",
        HTTP_IF_MATCH=visit_etag(v3),
        HTTP_IDEMPOTENCY_KEY="cancel-v3",
    )
    assert (missed.status_code, missed.json()["visit"]["status"]) == (200, "missed")
    assert (cancelled.status_code, cancelled.json()["visit"]["status"]) == (200, "cancelled")

    again = client.post(
        f"/api/v1/visits/{v3.pk}/cancel/",
        {"reason": "twice"},
        format="json",
        HTTP_IF_MATCH=cancelled["ETag"],
        HTTP_IDEMPOTENCY_KEY="cancel-v3-again",
    )
    assert again.status_code == 422
    assert again.json()["type"] == "/api/v1/problems/refused"


@pytest.mark.django_db
def test_register_then_enroll_then_withdraw(world: World) -> None:
    client = world.client("site_system")
    body = {
        "trial": "niams-ani-vascular",
        "site": "berlin",
        "study_id": "BERLIN-002",
        "birth_date": "1985-03-01",
        "anchors": {"day1": "2026-02-16"},
        "weight_kg": "70.5",
        "email": "p2@example.org",
    }

    created = client.post("/api/v1/participants/", body, format="json", HTTP_IDEMPOTENCY_KEY="r1")
    replay = client.post("/api/v1/participants/", body, format="json", HTTP_IDEMPOTENCY_KEY="r1")

    assert created.status_code == replay.status_code == 201, created.content
    assert replay.json() == created.json()
    participant = Participant.objects.get(study_id="BERLIN-002")
    assert Participant.objects.filter(study_id="BERLIN-002").count() == 1
    assert created["Location"] == f"/api/v1/participants/{participant.pk}/"
    assert created.json()["status"] == "screening"
    assert created.json()["contact"] is None  # a site system never reads contact details
    assert participant.email == "p2@example.org"

    enrolled = client.post(
        f"/api/v1/participants/{participant.pk}/enroll/",
        {"on": "2026-01-20"},
        format="json",
        HTTP_IF_MATCH=created["ETag"],
        HTTP_IDEMPOTENCY_KEY="e1",
    )
    assert enrolled.status_code == 200, enrolled.content
    assert enrolled.json()["status"] == "enrolled"
    assert enrolled.json()["visits_planned"] == participant.visits.count() > 0

    stale = client.post(
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"on": "2026-01-20", "reason": "moved away"},
        format="json",
        HTTP_IF_MATCH=created["ETag"],
        HTTP_IDEMPOTENCY_KEY="w0",
    )
    assert stale.status_code == 412
    withdrawn = client.post(
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"on": "2026-01-20", "reason": "moved away"},
        format="json",
        HTTP_IF_MATCH=enrolled["ETag"],
        HTTP_IDEMPOTENCY_KEY="w1",
    )
    assert withdrawn.status_code == 200, withdrawn.content
    assert withdrawn.json()["status"] == "withdrawn"
    assert (
        len(withdrawn.json()["cancelled_visits"])
        == participant.visits.filter(status="cancelled").count()
    )


@pytest.mark.django_db
def test_a_blinded_role_may_not_assign_an_arm(world: World) -> None:
    client = world.client("coordinator")
    created = client.post(
        "/api/v1/participants/",
        {
            "trial": "niams-ani-vascular",
            "site": "berlin",
            "study_id": "BERLIN-003",
            "birth_date": "1985-03-01",
            "anchors": {"day1": "2026-02-16"},
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY="r3",
    )

    response = client.post(
        f"/api/v1/participants/{created.json()['id']}/enroll/",
        {"on": "2026-01-20", "arm": "ANI"},
        format="json",
        HTTP_IF_MATCH=created["ETag"],
        HTTP_IDEMPOTENCY_KEY="e3",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "arm", "message": "your role may not assign the arm in this trial"}
    ]
    assert Participant.objects.get(study_id="BERLIN-003").status == "screening"


@pytest.mark.django_db
def test_a_read_only_role_gets_403_on_its_own_site(world: World) -> None:
    visit = world.visit("BERLIN-001", "V2")
    for role in ("sponsor_monitor", "unblinded_pharmacist"):
        response = world.client(role).post(
            f"/api/v1/visits/{visit.pk}/cancel/",
            {"reason": "x"},
            format="json",
            HTTP_IF_MATCH=visit_etag(visit),
            HTTP_IDEMPOTENCY_KEY=f"c-{role}",
        )
        assert response.status_code == 403
        assert response.json() == problem(
            403, "permission-denied", "your role may read this visit but not change it", []
        )
    assert ScheduledVisit.objects.get(pk=visit.pk).status == "planned"


def test_dates_are_bounded_so_nothing_overflows() -> None:
    from scheduler.api.serializers import LATEST_DATE

    assert dt.date.max - dt.timedelta(days=3660 * 2) > LATEST_DATE
