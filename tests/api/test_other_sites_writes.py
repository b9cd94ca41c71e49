"""Writes and actions on objects the caller has no membership for, guessed by id.

The authorization matrix (test_matrix.py) sends every API write to another site of the same
trial and to another trial at another site. Here the other trial runs at the caller's own
site: Tsukuba (open) also enrolls BERLIN-T01 at Berlin, where every `world` user acts for
NIAMS (blinded) only. A NIAMS member must get exactly what an unknown id gets (404, the same
body) for every Tsukuba object at Berlin, in the API and in the admin; a role that reads it
but may not change it gets 403; nothing is written (rows, audit history, outbox rows,
idempotency records, security events). Then: what the site-level objects (a site's feed, its
coordinators' notices) tell a member of one trial about another trial's participants, and
whether a blinded role learns an arm from a refusal, a precondition, an ETag, a preview or a
webhook payload.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from scheduler.api.models import IdempotencyRecord
from scheduler.api.preconditions import participant_etag, visit_etag
from scheduler.api.views import feed_etag, reminder_etag, trial_site_etag
from scheduler.calendars.feeds import feed_create
from scheduler.models import (
    BookingHold,
    CalendarFeed,
    CoordinatorNotification,
    EmergencyUnblinding,
    Membership,
    Reminder,
    ScheduledMilestone,
    ScheduledVisit,
    SecurityEvent,
    TaperAdjustment,
    WebhookDelivery,
    WebhookSubscription,
)
from scheduler.outbox.channels import coordinator_text
from scheduler.services import participant_enroll, visit_cancel
from tests.api.conftest import World
from tests.conftest import sign_in
from tests.factories import participant_for
from trials.models import ProtocolVersion, TrialSite

Role = Membership.Role
MISSING = 987654321
PASSWORD = "a-long-passphrase-for-tests"  # nosec B105
ARM_WORDS = {"ANI", "PBO", "Anifrolumab", "Placebo"}


# ----------------------------------------------------------------------------------------
# The other trial at the caller's own site


@pytest.fixture
def shared(world: World, django_user_model: Any) -> dict[str, Any]:
    """Tsukuba at Berlin: BERLIN-T01 enrolled, with a feed, a dead reminder, a reminder whose
    outcome is unknown, and its own coordinator and site system at Berlin."""
    version = ProtocolVersion.objects.get(trial=world.other_trial)
    participant = participant_for(
        version,
        anchors={"psl_start": dt.date(2026, 1, 5), "day1": dt.date(2026, 1, 12)},
        site=world.berlin,
        study_id="BERLIN-T01",
        email="berlin-t01@example.org",
        phone="+49 30 7654321",
    )
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5), arm=None)
    visit = (
        participant.visits.filter(
            status=ScheduledVisit.Status.PLANNED, window_start__gte=dt.date(2026, 1, 21)
        )
        .order_by("target_date", "id")
        .first()
    )
    assert visit is not None
    reminders = list(Reminder.objects.filter(participant=participant).order_by("id")[:2])
    assert len(reminders) == 2
    Reminder.objects.filter(pk=reminders[0].pk).update(
        status=Reminder.Status.DEAD, last_error="mailbox full"
    )
    Reminder.objects.filter(pk=reminders[1].pk).update(status=Reminder.Status.UNKNOWN)
    feed, _token = feed_create(participant=participant)
    coordinator = django_user_model.objects.create_user("tsukuba-coordinator-berlin")
    Membership.objects.create(
        user=coordinator, trial=world.other_trial, site=world.berlin, role=Role.COORDINATOR
    )
    system = django_user_model.objects.create_user("tsukuba-system-berlin")
    Membership.objects.create(
        user=system, trial=world.other_trial, site=world.berlin, role=Role.SITE_SYSTEM
    )
    return {
        "participant": participant,
        "visit": visit,
        "dead": Reminder.objects.get(pk=reminders[0].pk),
        "unknown": Reminder.objects.get(pk=reminders[1].pk),
        "feed": feed,
        "trial_site": TrialSite.objects.get(trial=world.other_trial, site=world.berlin),
        "coordinator": coordinator,
        "system": system,
    }


def api_client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(type(user).objects.get(pk=user.pk))
    return client


def admin_client(user: Any) -> Client:
    user.is_staff = True
    user.set_password(PASSWORD)
    user.save(update_fields=["is_staff", "password"])
    return sign_in(Client(raise_request_exception=False), user)


def state() -> dict[str, Any]:
    """Everything a write could leave behind: rows, audit history, outbox, idempotency, views."""
    return {
        "participants": sorted(
            Participant.objects.values_list(
                "pk", "status", "protocol_version_id", "ended_on", "eligibility_confirmed_by_id"
            )
        ),
        "participant_history": Participant.history.count(),
        "anchors": sorted(ParticipantAnchor.objects.values_list("pk", "code", "date")),
        "anchor_history": ParticipantAnchor.history.count(),
        "assignments": TreatmentAssignment.history.count(),
        "visits": sorted(
            ScheduledVisit.objects.values_list("pk", "status", "version", "booked_start", "reason")
        ),
        "visit_history": ScheduledVisit.history.count(),
        "milestone_history": ScheduledMilestone.history.count(),
        "taper": TaperAdjustment.objects.count(),
        "holds": BookingHold.objects.count(),
        "reminders": sorted(Reminder.objects.values_list("pk", "status", "attempts")),
        "reminder_history": Reminder.history.count(),
        "deliveries": WebhookDelivery.objects.count(),
        "feeds": sorted(CalendarFeed.objects.values_list("pk", "revoked_at")),
        "feed_history": CalendarFeed.history.count(),
        "notices": sorted(CoordinatorNotification.objects.values_list("pk", "read_at")),
        "trial_sites": sorted(
            TrialSite.objects.values_list("pk", "protocol_version_id", "approved_on")
        ),
        "trial_site_history": TrialSite.history.count(),
        "subscriptions": sorted(
            WebhookSubscription.objects.values_list("pk", "is_active", "updated_at")
        ),
        "unblindings": EmergencyUnblinding.objects.count(),
        "idempotency": IdempotencyRecord.objects.count(),
        "views": SecurityEvent.objects.filter(kind=SecurityEvent.Kind.VIEW).count(),
    }


def _problem(response: Any) -> tuple[int, Any]:
    if response.get("Content-Type") == "application/problem+json":
        return response.status_code, response.json()
    return response.status_code, response.content[:300]


def _send(client: APIClient, url: str, body: Any, headers: dict[str, str]) -> Any:
    return client.post(
        url,
        body,
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
        **headers,  # type: ignore[arg-type]
    )


def api_writes(world: World, shared: dict[str, Any], digests: dict[str, str]) -> list[Any]:
    """(path for the Tsukuba object, the same path for an unknown id, body, If-Match)."""
    p, v = shared["participant"], shared["visit"]
    window_day = max(v.window_start, dt.date(2026, 1, 21)).isoformat()
    p_tag, v_tag = participant_etag(p), visit_etag(v)
    pp, vv = f"/api/v1/participants/{p.pk}", f"/api/v1/visits/{v.pk}"
    mp, mv = f"/api/v1/participants/{MISSING}", f"/api/v1/visits/{MISSING}"
    book = {"local_date": window_day, "local_time": "10:00"}
    done = {"actual_date": "2026-01-19"}
    anchor = {"date": "2026-01-06"}
    taper = {"milestone_code": "PSL_TAPER", "week": 3, "dose_mg": None}
    move = {"version": "1.0", "on": "2026-02-01"}
    approval = {"version": "1.0", "approved_on": "2026-01-15", "on": "2026-01-20"}
    ts = trial_site_etag(shared["trial_site"])
    tsukuba_at_berlin = "/api/v1/trials/tsukuba-early-ani/sites/berlin"
    unknown_trial = "/api/v1/trials/no-such-trial/sites/berlin"
    return [
        (f"{pp}/enroll/", f"{mp}/enroll/", {"on": "2026-01-20", "arm": "ANI"}, p_tag),
        (f"{pp}/withdraw/", f"{mp}/withdraw/", {"on": "2026-01-20", "reason": "gone"}, p_tag),
        (f"{pp}/complete/", f"{mp}/complete/", {"on": "2026-01-20"}, p_tag),
        (
            f"{pp}/unscheduled-visits/",
            f"{mp}/unscheduled-visits/",
            {"local_date": "2026-01-22", "reason": "flare"},
            p_tag,
        ),
        (f"{pp}/anchors/psl_start/preview/", f"{mp}/anchors/psl_start/preview/", anchor, p_tag),
        (
            f"{pp}/anchors/psl_start/",
            f"{mp}/anchors/psl_start/",
            {**anchor, "reason": "typo", "preview_digest": digests["anchor"]},
            p_tag,
        ),
        (f"{pp}/taper-decisions/preview/", f"{mp}/taper-decisions/preview/", taper, p_tag),
        (
            f"{pp}/taper-decisions/",
            f"{mp}/taper-decisions/",
            {**taper, "reason": "flare", "preview_digest": digests["taper"]},
            p_tag,
        ),
        (f"{pp}/protocol-version/preview/", f"{mp}/protocol-version/preview/", move, p_tag),
        (
            f"{pp}/protocol-version/",
            f"{mp}/protocol-version/",
            {**move, "reason": "v1", "preview_digest": "0" * 64},
            p_tag,
        ),
        (f"{pp}/feeds/", f"{mp}/feeds/", {}, None),
        (f"{vv}/book/preview/", f"{mv}/book/preview/", book, v_tag),
        (f"{vv}/book/", f"{mv}/book/", {**book, "preview_digest": digests["book"]}, v_tag),
        (f"{vv}/book-slot/", f"{mv}/book-slot/", {"slot": f"{window_day}T01:00:00Z"}, v_tag),
        (f"{vv}/record-done/preview/", f"{mv}/record-done/preview/", done, v_tag),
        (
            f"{vv}/record-done/",
            f"{mv}/record-done/",
            {**done, "preview_digest": digests["done"]},
            v_tag,
        ),
        (f"{vv}/mark-missed/", f"{mv}/mark-missed/", {"reason": "did not come"}, v_tag),
        (f"{vv}/cancel/", f"{mv}/cancel/", {"reason": "not needed"}, v_tag),
        (
            f"/api/v1/reminders/{shared['dead'].pk}/retry/",
            f"/api/v1/reminders/{MISSING}/retry/",
            {},
            reminder_etag(shared["dead"]),
        ),
        (
            f"/api/v1/feeds/{shared['feed'].pk}/revoke/",
            f"/api/v1/feeds/{MISSING}/revoke/",
            {},
            feed_etag(shared["feed"]),
        ),
        (
            f"{tsukuba_at_berlin}/approval/preview/",
            f"{unknown_trial}/approval/preview/",
            approval,
            ts,
        ),
        (
            f"{tsukuba_at_berlin}/approval/",
            f"{unknown_trial}/approval/",
            {**approval, "reason": "v1", "preview_digest": "0" * 64},
            ts,
        ),
    ]


def _digests(shared: dict[str, Any]) -> dict[str, str]:
    """Real preview digests, from Tsukuba's own coordinator at Berlin: the confirms a NIAMS
    member sends below are complete, valid requests."""
    client = api_client(shared["coordinator"])
    p, v = shared["participant"], shared["visit"]
    window_day = max(v.window_start, dt.date(2026, 1, 21)).isoformat()
    asked = {
        "anchor": (
            f"/api/v1/participants/{p.pk}/anchors/psl_start/preview/",
            {"date": "2026-01-06"},
        ),
        "taper": (
            f"/api/v1/participants/{p.pk}/taper-decisions/preview/",
            {"milestone_code": "PSL_TAPER", "week": 3, "dose_mg": None},
        ),
        "book": (
            f"/api/v1/visits/{v.pk}/book/preview/",
            {"local_date": window_day, "local_time": "10:00"},
        ),
        "done": (f"/api/v1/visits/{v.pk}/record-done/preview/", {"actual_date": "2026-01-19"}),
    }
    found = {}
    for name, (url, body) in asked.items():
        response = client.post(url, body, format="json")
        assert response.status_code == 200, (url, response.content)
        found[name] = response.json()["preview_digest"]
    return found


# ----------------------------------------------------------------------------------------
# The API


@pytest.mark.django_db
def test_api_writes_on_another_trials_objects_at_the_callers_site_answer_as_an_unknown_id(
    world: World, shared: dict[str, Any]
) -> None:
    writes = api_writes(world, shared, _digests(shared))
    before = state()
    differ: list[str] = []
    for role in (
        Role.COORDINATOR,
        Role.INVESTIGATOR,
        Role.SITE_SYSTEM,
        Role.UNBLINDED_PHARMACIST,
        Role.SPONSOR_MONITOR,
        Role.DATA_MANAGER,
    ):
        client = world.client(role)
        for url, unknown, body, etag in writes:
            headers = {"HTTP_IF_MATCH": etag} if etag else {}
            got, expected = (
                _problem(_send(client, url, body, headers)),
                _problem(_send(client, unknown, body, headers)),
            )
            if got != expected or got[0] != 404:
                differ.append(f"{role} {url}: {got} vs unknown id {expected}")
        # Registering at Berlin in the other trial, and subscribing to its events there.
        for path, field, values in (
            (
                "/api/v1/participants/",
                "trial",
                {"site": "berlin", "study_id": "NEW-1", "birth_date": "1980-01-01"},
            ),
            (
                "/api/v1/webhooks/",
                "trial",
                {"sites": ["berlin"], "url": "https://rx.example/h", "events": ["visit.booked"]},
            ),
        ):
            got = _problem(_send(client, path, {**values, field: "tsukuba-early-ani"}, {}))
            expected = _problem(_send(client, path, {**values, field: "no-such-trial"}, {}))
            if got != expected:
                differ.append(f"{role} POST {path} tsukuba: {got} vs unknown trial {expected}")

    assert differ == []
    assert state() == before


@pytest.mark.django_db
def test_api_writes_by_a_role_that_reads_the_other_trial_are_403_and_write_nothing(
    world: World, shared: dict[str, Any], django_user_model: Any
) -> None:
    """A NIAMS coordinator at Berlin who also monitors Tsukuba: reads BERLIN-T01, changes
    nothing of it."""
    user = django_user_model.objects.create_user("coordinator-and-tsukuba-monitor")
    Membership.objects.create(
        user=user, trial=world.trial, site=world.berlin, role=Role.COORDINATOR
    )
    Membership.objects.create(user=user, trial=world.other_trial, role=Role.SPONSOR_MONITOR)
    writes = api_writes(world, shared, _digests(shared))
    client = api_client(user)
    before = state()
    answers = {}
    for url, _unknown, body, etag in writes:
        headers = {"HTTP_IF_MATCH": etag} if etag else {}
        status, problem = _problem(_send(client, url, body, headers))
        answers[url] = (status, problem["type"] if isinstance(problem, dict) else problem)
    register = _send(
        client,
        "/api/v1/participants/",
        {
            "trial": "tsukuba-early-ani",
            "site": "berlin",
            "study_id": "NEW-2",
            "birth_date": "1980-01-01",
        },  # fmt: skip
        {},
    )
    feeds_of_site = client.get("/api/v1/sites/berlin/feeds/")

    assert {
        url: a for url, a in answers.items() if a != (403, "/api/v1/problems/permission-denied")
    } == {}
    assert register.status_code == 403
    assert feeds_of_site.status_code == 200
    assert state() == before


# ----------------------------------------------------------------------------------------
# The admin


def _admin_urls(shared: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(URL name, what a confirm posts) of every action on a record of the other trial."""
    v = shared["visit"]
    day = max(v.window_start, dt.date(2026, 1, 21)).isoformat()
    return [
        ("admin:scheduler_scheduledvisit_book",
         {"local_date": day, "local_time": "10:00", "version": v.version, "reason": "",
          "_confirm": "1"}),
        ("admin:scheduler_scheduledvisit_record_done",
         {"actual_date": "2026-01-19", "version": v.version, "reason": "", "_confirm": "1"}),
        ("admin:scheduler_scheduledvisit_mark_missed",
         {"reason": "no show", "version": v.version, "_confirm": "1"}),
        ("admin:scheduler_scheduledvisit_cancel",
         {"reason": "not needed", "version": v.version, "_confirm": "1"}),
        ("admin:scheduler_scheduledvisit_deviation_reason",
         {"reason": "late", "version": v.version, "_confirm": "1"}),
        ("admin:participants_participant_withdraw",
         {"on": "2026-01-20", "reason": "moved", "_confirm": "1"}),
        ("admin:participants_participant_anchor",
         {"code": "psl_start", "new_date": "2026-01-06", "reason": "typo", "_confirm": "1"}),
        ("admin:participants_participant_taper",
         {"milestone_code": "PSL_TAPER", "week": "3", "reason": "flare", "_confirm": "1"}),
        ("admin:participants_participant_unscheduled_visit",
         {"local_date": "2026-01-22", "reason": "flare", "_confirm": "1"}),
        ("admin:participants_participant_move_version",
         {"on": "2026-02-01", "reason": "v", "_confirm": "1"}),
        ("admin:participants_participant_complete",
         {"on": "2026-01-20", "reason": "", "_confirm": "1"}),
        ("admin:participants_participant_screen_fail",
         {"on": "2026-01-20", "reason": "x", "_confirm": "1"}),
        ("admin:participants_participant_enroll", {"_enroll": "1"}),
        ("admin:participants_participant_emergency_unblind",
         {"password": PASSWORD, "reason": "anaphylaxis"}),
        ("admin:participants_participant_timeline", {}),
        ("admin:participants_participant_change", {"weight_kg": "99", "study_id": "BERLIN-T01"}),
        ("admin:scheduler_calendarfeed_participant", {"_create": "1"}),
        ("admin:scheduler_reminder_mark_sent", {"reason": "phoned", "_confirm": "1"}),
        ("admin:scheduler_reminder_send_again", {"reason": "phoned", "_confirm": "1"}),
        ("admin:trials_trialsite_approve",
         {"approved_on": "2026-01-15", "on": "2026-01-20", "reason": "v", "_confirm": "1"}),
    ]  # fmt: skip


def _target(name: str, shared: dict[str, Any]) -> int:
    if "scheduledvisit" in name:
        return int(shared["visit"].pk)
    if "reminder" in name:
        return int(shared["unknown"].pk)
    if "trialsite" in name:
        return int(shared["trial_site"].pk)
    return int(shared["participant"].pk)


@pytest.mark.django_db
def test_admin_actions_on_another_trials_records_at_the_same_site_are_404_like_a_missing_id(
    world: World, shared: dict[str, Any]
) -> None:
    # The pages exist: Tsukuba's own coordinator at Berlin opens each action's form.
    own = admin_client(shared["coordinator"])
    opened = {
        name: own.get(reverse(name, args=[_target(name, shared)])).status_code
        for name, _confirm in _admin_urls(shared)
        if name not in ("admin:participants_participant_emergency_unblind",)
    }
    assert {name: status for name, status in opened.items() if status not in (200, 302)} == {}
    before = state()
    differ: list[str] = []
    for role in (Role.COORDINATOR, Role.INVESTIGATOR):
        person = admin_client(world.users[role])
        for name, confirm in _admin_urls(shared):
            url = reverse(name, args=[_target(name, shared)])
            missing = reverse(name, args=[MISSING])
            for method, data in (("get", None), ("post", confirm)):
                call = getattr(person, method)
                got = call(url, data) if data is not None else call(url)
                unknown = call(missing, data) if data is not None else call(missing)
                if (got.status_code, got.content) != (unknown.status_code, unknown.content):
                    differ.append(
                        f"{role} {method} {name}: {got.status_code} vs {unknown.status_code}"
                    )
                elif got.status_code != 404:
                    differ.append(f"{role} {method} {name}: {got.status_code}")
        # The list actions, with another trial's rows selected.
        for changelist, action, pk in (
            ("admin:scheduler_reminder_changelist", "retry", shared["dead"].pk),
            ("admin:scheduler_calendarfeed_changelist", "revoke", shared["feed"].pk),
        ):
            person.post(
                reverse(changelist),
                {"action": action, "index": "0", "_selected_action": [str(pk)]},
            )

    assert differ == []
    assert state() == before


# ----------------------------------------------------------------------------------------
# Site-level objects: a site's feed, its coordinators' notices


def _feed_text(url: str) -> str:
    response = Client().get(urlsplit(url).path)
    assert response.status_code == 200
    return (
        b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
        if response.streaming
        else (response.content.decode())
    )


def _named_participants(ical: str) -> set[str]:
    unfolded = ical.replace("\r\n ", "")
    return set(re.findall(r"SUMMARY:([a-z-]+ [A-Z0-9-]+) ·", unfolded))


@pytest.mark.django_db
def test_a_site_feed_issued_by_a_member_of_one_trial_names_no_participant_of_another(
    world: World, shared: dict[str, Any]
) -> None:
    """The API's site calendar and the admin's booking board show another trial's bookings
    at the site as busy time without a name; a feed that a NIAMS member issues for Berlin
    must not hand them the study ids and visits of Tsukuba's participants there."""
    issued = _send(world.client("site_system"), "/api/v1/sites/berlin/feeds/", {}, {})
    assert issued.status_code == 201, issued.content
    page = admin_client(world.users[Role.COORDINATOR]).post(
        reverse("admin:scheduler_calendarfeed_site", args=[world.berlin.pk]), {"_create": "1"}
    )
    assert page.status_code == 200
    admin_url = re.search(
        r"https?://[^\s\"<]+/feeds/site/[A-Za-z0-9_-]+\.ics", page.content.decode()
    )
    assert admin_url is not None

    through_api = _named_participants(_feed_text(issued.json()["url"]))
    through_admin = _named_participants(_feed_text(admin_url.group(0)))

    assert (through_api, through_admin) == (
        {"niams-ani-vascular BERLIN-001"},
        {"niams-ani-vascular BERLIN-001"},
    )


@pytest.mark.django_db
def test_another_trials_site_feed_is_not_listed_revoked_or_regenerated_by_a_member_of_one(
    world: World, shared: dict[str, Any]
) -> None:
    """A site feed Tsukuba's coordinator issued for Berlin shows Tsukuba's visits: a NIAMS
    member at Berlin neither lists nor revokes it; Tsukuba's own site system does both."""
    theirs = api_client(shared["coordinator"]).post(
        "/api/v1/sites/berlin/feeds/", {}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert theirs.status_code == 201, theirs.content
    feed = CalendarFeed.objects.get(pk=theirs.json()["id"])
    niams = world.client("site_system")
    tsukuba = api_client(shared["system"])

    def listed(client: Any) -> list[int]:
        return [row["id"] for row in client.get("/api/v1/sites/berlin/feeds/").json()["results"]]

    refused = _send(
        niams, f"/api/v1/feeds/{feed.pk}/revoke/", {}, {"HTTP_IF_MATCH": feed_etag(feed)}
    )
    assert (feed.pk in listed(niams), refused.status_code) == (False, 404)
    assert [t.code for t in feed.trials.all()] == [world.other_trial.code]
    feed.refresh_from_db()
    assert feed.revoked_at is None
    revoked = _send(
        tsukuba, f"/api/v1/feeds/{feed.pk}/revoke/", {}, {"HTTP_IF_MATCH": feed_etag(feed)}
    )
    assert (feed.pk in listed(tsukuba), revoked.status_code) == (True, 200)


@pytest.mark.django_db
def test_reading_another_trial_is_not_enough_to_regenerate_its_site_feed_in_the_admin(
    world: World, shared: dict[str, Any]
) -> None:
    """A NIAMS coordinator who also reads Tsukuba at Berlin (a read-only role) sees its site
    feed listed on the admin's site feed page but may not revoke or regenerate it (the API
    refuses the same with 403)."""
    coordinator = world.users[Role.COORDINATOR]
    Membership.objects.create(
        user=coordinator,
        trial=world.other_trial,
        site=world.berlin,
        role=Role.UNBLINDED_PHARMACIST,
    )
    feed, _token = feed_create(
        site=world.berlin, trials=[world.other_trial], by=shared["coordinator"]
    )
    page = reverse("admin:scheduler_calendarfeed_site", args=[world.berlin.pk])
    person = admin_client(coordinator)

    answers = [
        person.post(page, {action: "1", "feed": feed.pk}) for action in ("_regenerate", "_revoke")
    ]

    feed.refresh_from_db()
    assert [a.status_code for a in answers] == [302, 302]  # "not one of these", nothing done
    assert feed.revoked_at is None
    assert CalendarFeed.objects.filter(site=world.berlin).count() == 1


@pytest.mark.django_db
def test_regenerating_a_feed_that_shows_nothing_gives_one_of_the_regenerators_trials(
    world: World, shared: dict[str, Any]
) -> None:
    """A site feed whose issuer is gone shows nothing (migration 0015); regenerated, the new
    one shows what one issued by whoever regenerates it would, not nothing again."""
    orphan = CalendarFeed.objects.create(site=world.berlin, token_sha256="c" * 64)
    page = reverse("admin:scheduler_calendarfeed_site", args=[world.berlin.pk])

    answer = admin_client(world.users[Role.COORDINATOR]).post(
        page, {"_regenerate": "1", "feed": orphan.pk}
    )

    orphan.refresh_from_db()
    [new] = CalendarFeed.objects.filter(site=world.berlin, revoked_at__isnull=True)
    assert (answer.status_code, orphan.revoked_at is not None) == (200, True)
    assert [t.code for t in new.trials.all()] == [world.trial.code]


@pytest.mark.django_db
def test_a_coordinator_neither_reads_nor_marks_read_another_trials_notices_at_the_site(
    world: World, shared: dict[str, Any]
) -> None:
    reminder = (
        Reminder.objects.filter(participant=shared["participant"], visit__isnull=False)
        .order_by("id")
        .first()
    )
    assert reminder is not None
    theirs = CoordinatorNotification.objects.create(
        site=world.berlin, reminder=reminder, text=coordinator_text(reminder)
    )
    person = admin_client(world.users[Role.COORDINATOR])

    listed = person.get(reverse("admin:scheduler_coordinatornotification_changelist"))
    page = person.get(reverse("admin:scheduler_coordinatornotification_change", args=[theirs.pk]))
    person.post(
        reverse("admin:scheduler_coordinatornotification_changelist"),
        {"action": "mark_read", "index": "0", "_selected_action": [str(theirs.pk)]},
    )
    theirs.refresh_from_db()

    assert ("BERLIN-T01" in listed.content.decode(), page.status_code, theirs.read_at) == (
        False,
        404,
        None,
    )


# ----------------------------------------------------------------------------------------
# Webhooks: another system's subscription, another trial's events at the site


@pytest.mark.django_db
def test_a_site_system_cannot_touch_another_trials_subscription_or_hear_its_events(
    world: World, shared: dict[str, Any]
) -> None:
    from scheduler.api.webhooks import webhook_etag  # after the API's URL converters

    ours = api_client(world.users[Role.SITE_SYSTEM])
    theirs = api_client(shared["system"])
    body = {"sites": ["berlin"], "url": "https://rx.example/hook", "events": ["visit.cancelled"]}
    mine = _send(ours, "/api/v1/webhooks/", {**body, "trial": "niams-ani-vascular"}, {})
    other = _send(theirs, "/api/v1/webhooks/", {**body, "trial": "tsukuba-early-ani"}, {})
    assert (mine.status_code, other.status_code) == (201, 201)
    subscription = WebhookSubscription.objects.get(pk=other.json()["id"])
    tag = {"HTTP_IF_MATCH": webhook_etag(subscription)}
    before = state()

    answers = [
        (_problem(_send(ours, f"/api/v1/webhooks/{subscription.pk}/{what}/", {}, tag)),
         _problem(_send(ours, f"/api/v1/webhooks/{MISSING}/{what}/", {}, tag)))
        for what in ("rotate-secret", "disable")
    ]  # fmt: skip
    read = ours.get(f"/api/v1/webhooks/{subscription.pk}/")
    assert state() == before

    visit_cancel(
        visit=shared["visit"],
        reason="not needed",
        by=shared["coordinator"],
        expected_version=shared["visit"].version,
    )
    heard = sorted(
        WebhookDelivery.objects.values_list("subscription__owner__username", "event_type")
    )

    assert all(got == unknown and got[0] == 404 for got, unknown in answers)
    assert read.status_code == 404
    assert heard == [("tsukuba-system-berlin", "visit.cancelled")]


# ----------------------------------------------------------------------------------------
# Blinded roles and the arm


def _values(value: Any) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "arm" and item is not None:
                yield f"arm={item}"
            yield from _values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.django_db
def test_blinded_writers_learn_no_arm_from_refusals_preconditions_previews_or_webhooks(
    world: World,
) -> None:
    """BERLIN-001 is on anifrolumab (ANI) in blinded NIAMS."""
    participant = world.people["BERLIN-001"]
    visit = world.visit("BERLIN-001", "V2")
    system = world.client(Role.SITE_SYSTEM)
    subscribed = _send(
        system,
        "/api/v1/webhooks/",
        {
            "trial": "niams-ani-vascular",
            "sites": ["berlin"],
            "url": "https://rx.example/h",
            "events": ["visit.booked", "visit.cancelled", "participant.withdrawn"],
        },  # fmt: skip
        {},
    )
    assert subscribed.status_code == 201, subscribed.content
    pp, vv = f"/api/v1/participants/{participant.pk}", f"/api/v1/visits/{visit.pk}"
    shown: list[str] = []
    enroll_answers = []
    for role in (Role.COORDINATOR, Role.INVESTIGATOR, Role.SITE_SYSTEM):
        client = world.client(role)
        for arm in ("ANI", "PBO", "NOPE"):
            response = _send(
                client, f"{pp}/enroll/", {"on": "2026-01-20", "arm": arm},
                {"HTTP_IF_MATCH": participant_etag(participant)},
            )  # fmt: skip
            enroll_answers.append((role, response.status_code, response.json()))
        responses = [
            _send(client, f"{pp}/withdraw/", {"on": "2026-01-20", "reason": "x"},
                  {"HTTP_IF_MATCH": '"stale"'}),
            _send(client, f"{vv}/book/", {"local_date": "2026-02-02", "local_time": "09:30",
                                          "preview_digest": "0" * 64},
                  {"HTTP_IF_MATCH": visit_etag(visit)}),
            client.post(f"{vv}/book/preview/", {"local_date": "2026-02-02", "local_time": "09:30"},
                        format="json"),
            client.post(f"{pp}/anchors/day1/preview/", {"date": "2026-02-09"}, format="json"),
            client.post(f"{pp}/protocol-version/preview/", {"version": "1.0", "on": "2026-02-01"},
                        format="json"),
            client.get(f"{pp}/"),
        ]  # fmt: skip
        for response in responses:
            etag = response.get("ETag", "")
            found = [v for v in _values(response.json()) if v in ARM_WORDS or v.startswith("arm=")]
            found += [w for w in ARM_WORDS if w in etag]
            shown += [f"{role} {response.status_code}: {f}" for f in found]
    # A booking sends the subscriber the visit: never the arm.
    booked = _send(
        world.client(Role.COORDINATOR),
        f"{vv}/book/",
        {
            "local_date": "2026-02-02",
            "local_time": "09:30",
            "preview_digest": world.client(Role.COORDINATOR)
            .post(
                f"{vv}/book/preview/",
                {"local_date": "2026-02-02", "local_time": "09:30"},
                format="json",
            )
            .json()["preview_digest"],
        },  # fmt: skip
        {"HTTP_IF_MATCH": visit_etag(visit)},
    )
    assert booked.status_code == 200, booked.content
    bodies = list(WebhookDelivery.objects.values_list("body", flat=True))

    assert shown == []
    assert len({(status, str(body)) for _role, status, body in enroll_answers}) == 1
    assert len(bodies) == 1
    assert not any(word in bodies[0] for word in ('"ANI"', '"PBO"', "Anifrolumab", "Placebo"))
