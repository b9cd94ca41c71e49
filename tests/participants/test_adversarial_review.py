# ruff: noqa: F811  (the API fixtures are imported from tests.api.conftest)
"""Adversarial review of the participant lifecycle: registration, eligibility, enrollment,
withdrawal, completion, screen failure and anchor changes, through the services and the API.

Clock: tests.api.conftest freezes it at 2026-01-20 08:00Z (Berlin 09:00) unless a test travels.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection, connections
from rest_framework.test import APIClient

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from scheduler.access import site_today
from scheduler.models import BookingHold, Reminder, ScheduledMilestone, ScheduledVisit
from scheduler.services import (
    CalendarError,
    participant_enroll,
    participant_enroll_check,
    participant_screen_fail,
    visit_record_done,
)
from tests.api.conftest import World, fresh_throttle_counts, frozen_clock, world  # noqa: F401
from tests.factories import SiteFactory, member, participant_for
from trials.models import Arm

NIAMS = "niams-ani-vascular"


def _post(client: APIClient, url: str, body: Any, *, etag: str | None, key: str) -> Any:
    headers: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": key}
    if etag is not None:
        headers["HTTP_IF_MATCH"] = etag
    return client.post(url, body, format="json", **headers)


def _etag(client: APIClient, participant: Participant) -> str:
    response = client.get(f"/api/v1/participants/{participant.pk}/")
    assert response.status_code == 200, response.content
    return str(response["ETag"])


def _rows() -> tuple[int, ...]:
    return (
        Participant.objects.count(),
        ParticipantAnchor.objects.count(),
        ScheduledVisit.objects.count(),
        ScheduledMilestone.objects.count(),
        TreatmentAssignment.objects.count(),
        Reminder.objects.count(),
        Participant.history.count(),
    )


def _register_body(study_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "trial": NIAMS,
        "site": "berlin",
        "study_id": study_id,
        "birth_date": "1985-03-01",
        "anchors": {"day1": "2026-02-16"},
        "weight_kg": "70.5",
        "email": "p@example.org",
        **extra,
    }


def _screening(world: World, study_id: str = "BERLIN-009", **fields: Any) -> Participant:
    version = world.people["BERLIN-001"].protocol_version
    return participant_for(
        version,
        anchors=fields.pop("anchors", {"day1": dt.date(2026, 2, 16)}),
        site=fields.pop("site", world.berlin),
        study_id=study_id,
        email="p@example.org",
        **fields,
    )


# ----------------------------------------------------------------------------------------
# Registration inputs


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_kg", "0"),
        ("weight_kg", "-5"),
        ("weight_kg", "1000"),
        ("weight_kg", "NaN"),
        ("weight_kg", "Infinity"),
        ("birth_date", "2026-01-21"),  # tomorrow even at UTC+14
        ("birth_date", "1899-12-31"),
        ("birth_date", "2200-01-01"),
        ("anchors.day1", "1899-12-31"),
        ("anchors.day1", "2201-01-01"),
        ("study_id", ""),
        ("study_id", "x" * 41),
    ],
)
def test_a_bad_registration_is_a_400_naming_the_field_and_writes_nothing(
    world: World, field: str, value: str
) -> None:
    body = _register_body("BERLIN-050")
    if field.startswith("anchors."):
        body["anchors"] = {field.split(".")[1]: value}
    else:
        body[field] = value
    before = _rows()

    response = _post(
        world.client("coordinator"),
        "/api/v1/participants/",
        body,
        etag=None,
        key=f"bad-{field}-{len(value)}-{value[:8]}",
    )

    assert response.status_code == 400, response.content
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert _rows() == before


@pytest.mark.django_db
def test_born_today_registers_and_is_then_refused_by_age_with_nothing_written(world: World) -> None:
    client = world.client("coordinator")
    created = _post(
        client,
        "/api/v1/participants/",
        _register_body("BERLIN-051", birth_date="2026-01-20"),
        etag=None,
        key="born-today",
    )
    assert created.status_code == 201, created.content
    participant = Participant.objects.get(study_id="BERLIN-051")
    before = _rows()

    enroll = _post(
        client,
        f"/api/v1/participants/{participant.pk}/enroll/",
        {"on": "2026-01-20"},
        etag=created["ETag"],
        key="born-today-enroll",
    )

    assert enroll.status_code == 422, enroll.content
    assert "age 0 years is outside the required range" in enroll.json()["detail"]
    assert _rows() == before


@pytest.mark.django_db
def test_a_duplicate_study_id_with_surrounding_spaces_is_refused_naming_study_id(
    world: World,
) -> None:
    before = _rows()
    response = _post(
        world.client("coordinator"),
        "/api/v1/participants/",
        _register_body("  BERLIN-001  "),
        etag=None,
        key="dup-spaces",
    )
    assert response.status_code == 422, response.content
    assert _rows() == before
    assert {e["field"] for e in response.json()["errors"]} == {"study_id"}, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("variant", ["berlin-001", "BERLIN-001\u200b", "ＢＥＲＬＩＮ-００１"])
def test_a_variant_of_an_existing_study_id_is_refused(world: World, variant: str) -> None:
    response = _post(
        world.client("coordinator"),
        "/api/v1/participants/",
        _register_body(variant),
        etag=None,
        key=f"variant-{variant.encode().hex()}",
    )
    assert response.status_code == 422, response.content
    assert response.json()["errors"] == [
        {
            "field": "study_id",
            "message": "study id BERLIN-001 is already registered in this trial"
            if variant != "berlin-001"
            else "study id berlin-001 is already registered in this trial",
        }
    ]


@pytest.mark.django_db
def test_an_edit_to_a_variant_of_another_participants_study_id_is_refused(world: World) -> None:
    from scheduler.services import CalendarError, participant_details_save

    assert world.people["TOKYO-001"].trial == world.people["BERLIN-001"].trial
    participant = world.people["BERLIN-001"]
    participant.study_id = " tokyo-001\u200b "
    with pytest.raises(CalendarError) as refused:
        participant_details_save(
            participant=participant, changed_fields=["study_id"], by=world.users["coordinator"]
        )
    participant.refresh_from_db()

    assert (refused.value.field, str(refused.value)) == (
        "study_id",
        "study id tokyo-001 is already registered in this trial",
    )
    assert participant.study_id == "BERLIN-001"


# ----------------------------------------------------------------------------------------
# Sites at the edges of the date line: "today" is the site's


KIRITIMATI_0030 = dt.datetime(2026, 1, 20, 10, 30, tzinfo=dt.UTC)  # 21 Jan 00:30 at +14
PAGO_PAGO_2330 = dt.datetime(2026, 1, 20, 10, 30, tzinfo=dt.UTC)  # 19 Jan 23:30 at -11


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("zone", "born", "local_today", "eligible"),
    [
        # 18 on the site's today (21 Jan), still 17 on the UTC date (20 Jan).
        ("Pacific/Kiritimati", dt.date(2008, 1, 21), dt.date(2026, 1, 21), True),
        # 18 on the UTC date (20 Jan), still 17 on the site's today (19 Jan).
        ("Pacific/Pago_Pago", dt.date(2008, 1, 20), dt.date(2026, 1, 19), False),
    ],
)
def test_eligibility_and_enrollment_use_the_sites_local_today(
    world: World, django_user_model, zone: str, born: dt.date, local_today: dt.date, eligible: bool
) -> None:
    site = SiteFactory.create(code=f"edge-{zone[8:12].lower()}", timezone=zone)
    version = world.people["BERLIN-001"].protocol_version
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 2, 16)},
        site=site,
        study_id="EDGE-001",
        birth_date=born,
        email="edge@example.org",
    )
    coordinator = member(
        django_user_model.objects.create_user("edge"), trial=version.trial, site=site
    )
    client = APIClient()
    client.force_authenticate(coordinator)
    with time_machine.travel(KIRITIMATI_0030, tick=False):
        assert local_today == KIRITIMATI_0030.astimezone(ZoneInfo(zone)).date()
        assert site_today(site) == local_today
        assert client.get(f"/api/v1/sites/{site.code}/").json()["today"] == local_today.isoformat()
        answer = client.get(f"/api/v1/participants/{participant.pk}/eligibility/").json()
        problems = participant_enroll_check(
            participant=participant,
            on=site_today(site),
            arm=Arm.objects.get(version=version, code="ANI"),
        )

    assert (answer["on"], answer["eligible"]) == (local_today.isoformat(), eligible)
    assert (problems == []) is eligible


@pytest.mark.django_db
def test_screen_failure_today_is_the_sites_today_at_both_edges(world: World) -> None:
    version = world.people["BERLIN-001"].protocol_version
    kiritimati = SiteFactory.create(code="kiritimati", timezone="Pacific/Kiritimati")
    pago = SiteFactory.create(code="pago", timezone="Pacific/Pago_Pago")
    east = participant_for(version, anchors={}, site=kiritimati, study_id="KI-1")
    west = participant_for(version, anchors={}, site=pago, study_id="PP-1")
    with time_machine.travel(KIRITIMATI_0030, tick=False):
        participant_screen_fail(
            participant=east, on=dt.date(2026, 1, 21), by=None, reason="criterion"
        )
        with pytest.raises(CalendarError, match="site's today \\(2026-01-19\\)"):
            participant_screen_fail(
                participant=west, on=dt.date(2026, 1, 20), by=None, reason="criterion"
            )
    west.refresh_from_db()
    assert west.status == "screening"


# ----------------------------------------------------------------------------------------
# Enrollment


@pytest.mark.django_db
def test_enrollment_on_a_future_date_cannot_make_a_minor_eligible(world: World) -> None:
    participant = _screening(world, birth_date=dt.date(2008, 2, 1))  # 18 on 1 Feb 2026
    client = world.client("coordinator")
    before = _rows()

    response = _post(
        client,
        f"/api/v1/participants/{participant.pk}/enroll/",
        {"on": "2026-02-20"},
        etag=_etag(client, participant),
        key="future-enroll",
    )

    assert response.status_code == 400, response.content
    assert response.json()["errors"] == [
        {
            "field": "on",
            "message": "an enrollment is dated on or before the site's today (2026-01-20), "
            "not later",
        }
    ]
    assert _rows() == before


@pytest.mark.django_db
def test_enrolling_twice_withdrawing_twice_and_enrolling_after_withdrawal_are_422(
    world: World,
) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    url = f"/api/v1/participants/{participant.pk}"
    before = _rows()

    again = _post(
        client, f"{url}/enroll/", {"on": "2026-01-20"}, etag=_etag(client, participant), key="e2"
    )
    assert again.status_code == 422, again.content
    assert "status is enrolled, expected screening" in again.json()["detail"]
    assert _rows() == before

    first = _post(
        client,
        f"{url}/withdraw/",
        {"on": "2026-01-20", "reason": "moved"},
        etag=_etag(client, participant),
        key="w1",
    )
    assert first.status_code == 200, first.content
    after_withdrawal = _rows()
    for key, path, body in (
        ("w2", "withdraw", {"on": "2026-01-20", "reason": "moved"}),
        ("e3", "enroll", {"on": "2026-01-20"}),
        ("c1", "complete", {"on": "2026-01-20"}),
    ):
        refused = _post(client, f"{url}/{path}/", body, etag=first["ETag"], key=key)
        assert refused.status_code == 422, (path, refused.content)
        assert refused.json()["type"] == "/api/v1/problems/refused"
        assert "withdrawn" in refused.json()["detail"]
    assert _rows() == after_withdrawal


@pytest.mark.django_db
def test_completing_with_open_visits_is_422_naming_them_and_writes_nothing(world: World) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    before = _rows()

    response = _post(
        client,
        f"/api/v1/participants/{participant.pk}/complete/",
        {"on": "2026-01-20"},
        etag=_etag(client, participant),
        key="complete-open",
    )

    assert response.status_code == 422, response.content
    assert "still has open visits: V1 (planned)" in response.json()["detail"]
    participant.refresh_from_db()
    assert (participant.status, participant.ended_on) == ("enrolled", None)
    assert _rows() == before


@pytest.mark.django_db
def test_a_minor_without_a_guardian_gets_nothing_at_their_own_address(
    world: World, import_seed
) -> None:
    version = import_seed("003b")
    participant = participant_for(
        version,
        anchors={"day1": dt.date(2026, 2, 16)},
        site=world.berlin,
        study_id="KID-001",
        birth_date=dt.date(2016, 5, 1),
        email="kid@example.org",
        weight_kg=None,
    )
    participant_enroll(
        participant=participant,
        on=dt.date(2026, 1, 20),
        arm=Arm.objects.get(version=version, code="ANI"),
    )

    assert not Reminder.objects.filter(participant=participant, audience="participant").exists()


# ----------------------------------------------------------------------------------------
# Withdrawal


@pytest.mark.django_db
def test_withdrawal_cancels_what_is_ahead_with_cancel_invites_and_keeps_what_was_done(
    world: World, django_user_model
) -> None:
    coordinator = world.users["coordinator"]
    participant = world.people["BERLIN-001"]
    v1 = world.visit("BERLIN-001", "V1")
    visit_record_done(visit=v1, actual_date=dt.date(2026, 1, 15), by=coordinator)
    v1.refresh_from_db()
    done_before = (v1.status, v1.actual_date, v1.version, v1.ical_sequence)
    # Every invite already went out.
    Reminder.objects.filter(participant=participant, event="invite").update(status="sent")
    sent_invites = set(
        Reminder.objects.filter(participant=participant, event="invite").values_list(
            "visit_id", flat=True
        )
    )
    assert sent_invites
    client = world.client("coordinator")

    response = _post(
        client,
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"on": "2026-01-20", "reason": "moved away"},
        etag=_etag(client, participant),
        key="withdraw",
    )

    assert response.status_code == 200, response.content
    v1.refresh_from_db()
    assert (v1.status, v1.actual_date, v1.version, v1.ical_sequence) == done_before
    assert not ScheduledVisit.objects.filter(
        participant=participant, status__in=ScheduledVisit.OPEN
    ).exists()
    assert not BookingHold.objects.filter(visit__participant=participant).exists()
    assert (
        not Reminder.objects.filter(participant=participant, status="pending")
        .exclude(event="invite")
        .exists()
    )
    cancelled = ScheduledVisit.objects.filter(participant=participant, status="cancelled")
    cancel_invites = {
        visit_id
        for visit_id, sequence, current in Reminder.objects.filter(
            participant=participant, event="invite", status="pending", visit__in=cancelled
        ).values_list("visit_id", "ical_sequence", "visit__ical_sequence")
        if sequence == current
    }
    assert cancel_invites == sent_invites - {v1.pk}


@pytest.mark.django_db
def test_a_withdrawal_dated_in_the_future_is_refused_naming_on(world: World) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    before = _rows()

    response = _post(
        client,
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"on": "2026-06-01", "reason": "moving abroad in June"},
        etag=_etag(client, participant),
        key="withdraw-future",
    )

    assert response.status_code == 422, (
        response.status_code,
        ScheduledVisit.objects.filter(
            participant=participant, status__in=ScheduledVisit.OPEN
        ).count(),
    )
    assert {e["field"] for e in response.json()["errors"]} == {"on"}
    assert _rows() == before


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["withdraw", "complete"])
def test_an_end_date_before_enrollment_is_refused_naming_on(world: World, action: str) -> None:
    client = world.client("coordinator")
    participant = world.people["BERLIN-001"]
    if action == "complete":
        ScheduledVisit.objects.filter(participant=participant).update(status="cancelled")
    before = _rows()

    response = _post(
        client,
        f"/api/v1/participants/{participant.pk}/{action}/",
        {"on": "1900-01-01", "reason": "data entry"},
        etag=_etag(client, participant),
        key=f"{action}-1900",
    )

    assert response.status_code == 422, response.content
    assert {e["field"] for e in response.json()["errors"]} == {"on"}
    assert _rows() == before


def _enrolled_at_site(world: World, zone: str, study_id: str, on: dt.date) -> Participant:
    site = SiteFactory.create(code=f"z-{study_id.lower()}", timezone=zone)
    participant = _screening(world, study_id, site=site)
    participant_enroll(participant=participant, on=on)
    participant.refresh_from_db()
    return participant


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("zone", "today"),
    [
        # At 2026-01-20 11:00 UTC: already the 21st on Kiritimati (UTC+14), still the 20th
        # in Pago Pago (UTC-11) and in UTC itself.
        ("Pacific/Kiritimati", dt.date(2026, 1, 21)),
        ("Pacific/Pago_Pago", dt.date(2026, 1, 20)),
        ("UTC", dt.date(2026, 1, 20)),
    ],
)
@pytest.mark.parametrize("action", ["withdraw", "complete"])
def test_an_end_date_may_be_the_sites_today_and_not_the_day_after(
    world: World, zone: str, today: dt.date, action: str
) -> None:
    from scheduler.services import participant_complete, participant_withdraw

    with time_machine.travel(dt.datetime(2026, 1, 20, 11, 0, tzinfo=dt.UTC), tick=False):
        participant = _enrolled_at_site(world, zone, "ZONE-1", dt.date(2026, 1, 10))
        assert site_today(participant.site) == today
        if action == "complete":
            ScheduledVisit.objects.filter(participant=participant).update(status="cancelled")

        def end(on: dt.date) -> Any:
            if action == "withdraw":
                return participant_withdraw(
                    participant=participant, on=on, by=world.users["coordinator"], reason="moved"
                )
            return participant_complete(
                participant=participant, on=on, by=world.users["coordinator"]
            )

        with pytest.raises(CalendarError) as refused:
            end(today + dt.timedelta(days=1))
        assert refused.value.field == "on"
        assert str(refused.value) == (
            f"a participation ends on or before the site's today ({today.isoformat()}), "
            f"not on {(today + dt.timedelta(days=1)).isoformat()}"
        )
        participant.refresh_from_db()
        assert (participant.status, participant.ended_on) == ("enrolled", None)

        end(today)
    participant.refresh_from_db()
    assert participant.ended_on == today
    assert participant.status == ("withdrawn" if action == "withdraw" else "completed")


@pytest.mark.django_db
def test_an_end_date_may_be_the_enrollment_day_and_not_the_day_before(world: World) -> None:
    from scheduler.services import participant_withdraw

    participant = _enrolled_at_site(world, "Asia/Tokyo", "TOKYO-9", dt.date(2026, 1, 12))
    assert participant.enrolled_on == dt.date(2026, 1, 12)
    # Recorded later than the day it took place: the end date is checked against the day.
    assert participant.enrolled_at is not None
    assert participant.enrolled_at.date() > participant.enrolled_on

    with pytest.raises(CalendarError) as refused:
        participant_withdraw(
            participant=participant,
            on=dt.date(2026, 1, 11),
            by=world.users["coordinator"],
            reason="consent withdrawn",
        )
    assert refused.value.field == "on"
    assert str(refused.value) == (
        "a participation ends on or after its enrollment (2026-01-12), not on 2026-01-11"
    )
    participant_withdraw(
        participant=participant,
        on=dt.date(2026, 1, 12),
        by=world.users["coordinator"],
        reason="consent withdrawn",
    )
    participant.refresh_from_db()
    assert (participant.status, participant.ended_on) == ("withdrawn", dt.date(2026, 1, 12))


@pytest.mark.django_db
def test_a_participant_enrolled_before_the_day_was_kept_is_bounded_by_today_alone(
    world: World,
) -> None:
    """Participants enrolled before participants 0005 have no enrollment day: an end date
    before the day their enrollment was recorded is theirs to give (it may well be true)."""
    from scheduler.services import participant_withdraw

    participant = world.people["BERLIN-001"]
    Participant.objects.filter(pk=participant.pk).update(enrolled_on=None)
    participant_withdraw(
        participant=participant,
        on=dt.date(2025, 12, 1),
        by=world.users["coordinator"],
        reason="consent withdrawn",
    )
    participant.refresh_from_db()
    assert participant.ended_on == dt.date(2025, 12, 1)


@pytest.mark.django_db
def test_the_enrollment_day_is_in_the_api_and_the_webhook_payload(world: World) -> None:
    from scheduler.outbox.webhooks import participant_data

    participant = _enrolled_at_site(world, "America/Los_Angeles", "LA-1", dt.date(2026, 1, 15))
    client = world.client("coordinator")
    member(world.users["coordinator"], trial=participant.trial, site=participant.site)
    shown = client.get(f"/api/v1/participants/{participant.pk}/")
    assert shown.status_code == 200, shown.content
    assert shown.json()["enrolled_on"] == "2026-01-15"
    assert participant_data(participant)["enrolled_on"] == "2026-01-15"


# ----------------------------------------------------------------------------------------
# Anchors


@pytest.mark.django_db
def test_an_anchor_moved_after_a_visit_was_done_leaves_the_done_visit_alone(world: World) -> None:
    participant = world.people["BERLIN-001"]
    v1 = world.visit("BERLIN-001", "V1")
    visit_record_done(visit=v1, actual_date=dt.date(2026, 1, 15), by=world.users["coordinator"])
    v1.refresh_from_db()
    done = (v1.status, v1.target_date, v1.window_start, v1.window_end, v1.actual_date, v1.version)
    v2 = world.visit("BERLIN-001", "V2")
    client = world.client("coordinator")
    base = f"/api/v1/participants/{participant.pk}/anchors/day1/"

    preview = client.post(base + "preview/", {"date": "2026-02-23"}, format="json")
    assert preview.status_code == 200, preview.content
    assert "V1" not in {c["visit_code"] for c in preview.json()["result"]["visits"]}
    confirm = _post(
        client,
        base,
        {
            "date": "2026-02-23",
            "reason": "slot",
            "preview_digest": preview.json()["preview_digest"],
        },
        etag=preview.json()["participant_etag"],
        key="day1",
    )

    assert confirm.status_code == 200, confirm.content
    v1.refresh_from_db()
    assert (
        v1.status,
        v1.target_date,
        v1.window_start,
        v1.window_end,
        v1.actual_date,
        v1.version,
    ) == done
    assert ScheduledVisit.objects.get(pk=v2.pk).target_date == v2.target_date + dt.timedelta(
        days=21
    )


@pytest.mark.django_db
@pytest.mark.parametrize("day", ["1900-01-01", "2200-12-31"])
def test_anchor_dates_at_the_limits_answer_without_a_server_error(world: World, day: str) -> None:
    participant = world.people["BERLIN-001"]
    client = world.client("coordinator")
    before = _rows()

    preview = client.post(
        f"/api/v1/participants/{participant.pk}/anchors/day1/preview/", {"date": day}, format="json"
    )

    assert preview.status_code in (200, 422), preview.content
    assert _rows() == before


@pytest.mark.django_db
def test_an_anchor_of_a_withdrawn_participant_is_refused(world: World) -> None:
    participant = world.people["BERLIN-001"]
    client = world.client("coordinator")
    withdrawn = _post(
        client,
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"on": "2026-01-20", "reason": "moved"},
        etag=_etag(client, participant),
        key="w",
    )
    base = f"/api/v1/participants/{participant.pk}/anchors/day1/"
    preview = client.post(base + "preview/", {"date": "2026-02-23"}, format="json")
    before = _rows()
    confirm = _post(
        client,
        base,
        {
            "date": "2026-02-23",
            "reason": "x",
            "preview_digest": preview.json().get("preview_digest", "x" * 64),
        },
        etag=withdrawn["ETag"],
        key="a",
    )
    assert confirm.status_code in (409, 422), confirm.content
    assert _rows() == before


# ----------------------------------------------------------------------------------------
# Concurrency on real Postgres


def _race(calls: list[Any]) -> list[Any]:
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - asserted by the caller
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_enrollments_of_one_participant_one_wins_nothing_doubled(
    world: World,
) -> None:
    assert connection.vendor == "postgresql"
    participant = _screening(world, "BERLIN-RACE")
    url = f"/api/v1/participants/{participant.pk}/enroll/"
    etag = _etag(world.client("coordinator"), participant)

    def enroll(key: str) -> Any:
        response = _post(world.client("coordinator"), url, {"on": "2026-01-20"}, etag=etag, key=key)
        return response.status_code

    results = _race([lambda: enroll("race-a"), lambda: enroll("race-b")])

    assert sorted(map(str, results)) in (["200", "412"], ["200", "409"], ["200", "422"]), results
    participant.refresh_from_db()
    assert participant.status == "enrolled"
    planned = ScheduledVisit.objects.filter(participant=participant)
    assert planned.count() == planned.values("visit_definition", "occurrence").distinct().count()
    assert Reminder.objects.filter(participant=participant, event="welcome").count() == 1
    assert participant.history.filter(history_change_reason="enrolled").count() == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_registrations_of_one_study_id_one_wins_the_other_is_4xx(
    world: World,
) -> None:
    assert connection.vendor == "postgresql"
    before = Participant.objects.count()

    def register(key: str) -> Any:
        client = world.client("coordinator")
        return _post(
            client, "/api/v1/participants/", _register_body("BERLIN-TWIN"), etag=None, key=key
        )

    results = _race([lambda: register("twin-a"), lambda: register("twin-b")])

    codes = sorted(getattr(r, "status_code", repr(r)) for r in results)
    assert Participant.objects.count() == before + 1
    assert codes in ([201, 400], [201, 409], [201, 422]), codes
