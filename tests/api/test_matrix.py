"""The authorization matrix: every endpoint × method × role × (own site, other site, other
trial, non-existent id), with the exact status and problem type of each answer.

Changes are sent with a stale If-Match, so a caller who may change the object gets 412 and
nothing is written, one who only reads it gets 403, and one who cannot see it gets 404: the
matrix proves the order of the doors without changing any state. Every 2xx body is then
searched for participants and sites the role may not read and for treatment arms.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from scheduler.calendars.feeds import feed_create
from scheduler.models import Membership, Reminder
from tests.api.conftest import ROLES, World

Role = Membership.Role
READ = {
    Role.COORDINATOR,
    Role.INVESTIGATOR,
    Role.UNBLINDED_PHARMACIST,
    Role.SPONSOR_MONITOR,
    Role.SITE_SYSTEM,
}
WRITE = {Role.COORDINATOR, Role.INVESTIGATOR, Role.SITE_SYSTEM}
TARGETS = ["own", "other_site", "other_trial", "missing"]
MISSING_ID = 987654321


def reads(role: str, target: str) -> bool:
    """May the role (a NIAMS member at Berlin) read a participant, visit or site there?"""
    if role not in READ:
        return False
    return target == "own" or (target == "other_site" and role == Role.SPONSOR_MONITOR)


def writes(role: str, target: str) -> bool:
    return role in WRITE and target == "own"


def reads_trial(role: str, target: str) -> bool:
    return role != "nobody" and target in ("own", "other_site")


def _ids(world: World) -> dict[str, dict[str, Any]]:
    study = {"own": "BERLIN-001", "other_site": "TOKYO-001", "other_trial": "OSAKA-001"}
    participants = {t: world.people[s].pk for t, s in study.items()}
    visits = {
        t: world.visit(s, "V2" if t != "other_trial" else _first_code(world, s)).pk
        for t, s in study.items()
    }
    participants["missing"] = visits["missing"] = MISSING_ID
    reminders = {
        t: Reminder.objects.filter(participant_id=pk, visit__isnull=False).order_by("id")[0].pk
        for t, pk in participants.items()
        if t != "missing"
    }
    feeds = {t: feed_create(participant=world.people[s])[0].pk for t, s in study.items()}
    reminders["missing"] = feeds["missing"] = MISSING_ID
    return {
        "reminder": reminders,
        "feed": feeds,
        "approval": {
            "own": "niams-ani-vascular/sites/berlin",
            "other_site": "niams-ani-vascular/sites/tokyo",
            "other_trial": "tsukuba-early-ani/sites/osaka",
            "missing": "niams-ani-vascular/sites/nowhere",
        },
        "participant": participants,
        "visit": visits,
        "site": {
            "own": "berlin",
            "other_site": "tokyo",
            "other_trial": "osaka",
            "missing": "nowhere",
        },
        "trial": {
            "own": "niams-ani-vascular",
            "other_site": "niams-ani-vascular",
            "other_trial": "tsukuba-early-ani",
            "missing": "no-such-trial",
        },
    }


def _first_code(world: World, study_id: str) -> str:
    visit = world.people[study_id].visits.order_by("target_date", "id").first()
    assert visit is not None and visit.visit_definition is not None
    return visit.visit_definition.code


# (method, path template, kind, body, expected status for the allowed caller)
DETAIL_READS = [
    ("GET", "/api/v1/trials/{}/", "trial"),
    ("GET", "/api/v1/trials/{}/versions/", "trial"),
    ("GET", "/api/v1/trials/{}/versions/1.0/", "trial"),
    ("GET", "/api/v1/sites/{}/", "site"),
    ("GET", "/api/v1/sites/{}/feeds/", "site"),
    ("GET", "/api/v1/participants/{}/", "participant"),
    ("GET", "/api/v1/participants/{}/calendar/", "participant"),
    ("GET", "/api/v1/participants/{}/eligibility/", "participant"),
    ("GET", "/api/v1/visits/{}/", "visit"),
    ("GET", "/api/v1/participants/{}/reminders/", "participant"),
    ("GET", "/api/v1/participants/{}/feeds/", "participant"),
    ("GET", "/api/v1/visits/{}/reminders/", "visit"),
    ("GET", "/api/v1/visits/{}/slots/", "visit"),
    ("GET", "/api/v1/sites/{}/calendar/", "site"),
    ("GET", "/api/v1/reminders/{}/", "reminder"),
    ("GET", "/api/v1/trials/{}/approval/", "approval"),
]
READ_TEMPLATES = {template for _, template, _ in DETAIL_READS}
DIGEST = "0" * 64
CHANGES: list[tuple[str, str, str, Mapping[str, object]]] = [
    ("POST", "/api/v1/participants/{}/enroll/", "participant", {"on": "2026-01-20"}),
    (
        "POST",
        "/api/v1/participants/{}/withdraw/",
        "participant",
        {"on": "2026-01-20", "reason": "moved away"},
    ),
    ("POST", "/api/v1/participants/{}/complete/", "participant", {"on": "2026-01-20"}),
    (
        "POST",
        "/api/v1/visits/{}/book/",
        "visit",
        {"local_date": "2026-02-02", "local_time": "09:30", "preview_digest": "0" * 64},
    ),
    (
        "POST",
        "/api/v1/visits/{}/record-done/",
        "visit",
        {"actual_date": "2026-01-20", "preview_digest": "0" * 64},
    ),
    ("POST", "/api/v1/visits/{}/book-slot/", "visit", {"slot": "2026-02-02T08:30:00Z"}),
    ("POST", "/api/v1/visits/{}/mark-missed/", "visit", {"reason": "did not come"}),
    ("POST", "/api/v1/visits/{}/cancel/", "visit", {"reason": "not needed"}),
    (
        "POST",
        "/api/v1/participants/{}/unscheduled-visits/",
        "participant",
        {"local_date": "2026-01-22", "reason": "flare"},
    ),
    (
        "POST",
        "/api/v1/participants/{}/anchors/day1/",
        "participant",
        {"date": "2026-02-09", "reason": "slot", "preview_digest": DIGEST},
    ),
    (
        "POST",
        "/api/v1/participants/{}/taper-decisions/",
        "participant",
        {"milestone_code": "PSL_TAPER", "week": 3, "reason": "flare", "preview_digest": DIGEST},
    ),
    (
        "POST",
        "/api/v1/participants/{}/protocol-version/",
        "participant",
        {"version": "1.0", "on": "2026-02-01", "reason": "v1", "preview_digest": DIGEST},
    ),
    ("POST", "/api/v1/reminders/{}/retry/", "reminder", {}),
    ("POST", "/api/v1/feeds/{}/revoke/", "feed", {}),
    (
        "POST",
        "/api/v1/trials/{}/approval/",
        "approval",
        {
            "version": "1.0",
            "approved_on": "2026-01-15",
            "on": "2026-01-20",
            "reason": "v1",
            "preview_digest": DIGEST,
        },
    ),
]
# What a caller who may change the object gets from a preview (NIAMS has no taper: refused).
PREVIEW_OK = (200, None)
PREVIEWS: list[tuple[str, str, str, Mapping[str, object]]] = [
    (
        "POST",
        "/api/v1/visits/{}/book/preview/",
        "visit",
        {"local_date": "2026-02-02", "local_time": "09:30"},
    ),
    ("POST", "/api/v1/visits/{}/record-done/preview/", "visit", {"actual_date": "2026-01-19"}),
    (
        "POST",
        "/api/v1/participants/{}/anchors/day1/preview/",
        "participant",
        {"date": "2026-02-09"},
    ),
    (
        "POST",
        "/api/v1/participants/{}/taper-decisions/preview/",
        "participant",
        {"milestone_code": "PSL_TAPER", "week": 3},
    ),
    (
        "POST",
        "/api/v1/participants/{}/protocol-version/preview/",
        "participant",
        {"version": "1.0", "on": "2026-02-01"},
    ),
    (
        "POST",
        "/api/v1/trials/{}/approval/preview/",
        "approval",
        {"version": "1.0", "approved_on": "2026-01-15", "on": "2026-01-20"},
    ),
]
PREVIEW_WRITER_ANSWER = {"/api/v1/participants/{}/taper-decisions/preview/": (422, "refused")}
# Creations without If-Match: a caller who may change the participant creates (201).
CREATES: list[tuple[str, str, str, Mapping[str, object]]] = [
    ("POST", "/api/v1/participants/{}/feeds/", "participant", {}),
    ("POST", "/api/v1/sites/{}/feeds/", "site", {}),
]
LISTS = ["/api/v1/trials/", "/api/v1/sites/", "/api/v1/participants/", "/api/v1/visits/"]
FILTERED_LISTS = [
    ("/api/v1/participants/?site={}", "site"),
    ("/api/v1/visits/?site={}", "site"),
    ("/api/v1/visits/?participant={}", "participant"),
    ("/api/v1/participants/?trial={}", "trial"),
]


def _problem_type(response: Any) -> str | None:
    if response["Content-Type"] != "application/problem+json":
        return None
    return str(response.json()["type"]).rsplit("/", 1)[-1]


def _objects_with(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            yield value
        for v in value.values():
            yield from _objects_with(v, key)
    elif isinstance(value, list):
        for item in value:
            yield from _objects_with(item, key)


def _walk(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)
    else:
        yield key, value


@pytest.mark.django_db
def test_authorization_matrix(world: World) -> None:
    ids = _ids(world)
    readable_study_ids = {
        role: {
            s
            for t, s in (
                ("own", "BERLIN-001"),
                ("other_site", "TOKYO-001"),
                ("other_trial", "OSAKA-001"),
            )
            if reads(role, t)
        }
        for role in [*ROLES, "nobody"]
    }
    readable_sites = {
        role: {
            s
            for t, s in (("own", "berlin"), ("other_site", "tokyo"), ("other_trial", "osaka"))
            if reads(role, t)
        }
        for role in [*ROLES, "nobody"]
    }
    mismatches: list[str] = []
    leaks: list[str] = []
    arms_shown: list[str] = []
    cases = 0

    def check(
        role: str, method: str, url: str, expected: tuple[int, str | None], response: Any
    ) -> None:
        nonlocal cases
        cases += 1
        got = (response.status_code, _problem_type(response))
        if got != expected:
            mismatches.append(
                f"{role} {method} {url}: expected {expected}, got {got} {response.content[:200]!r}"
            )
        if response.status_code >= 300 or response.status_code == 204:
            return
        body = response.json()
        for key, value in _walk(body):
            if key == "study_id" and not may_read_study(role, value):
                leaks.append(f"{role} {method} {url}: study {value}")
            if key == "site" and isinstance(value, str) and value not in readable_sites[role]:
                leaks.append(f"{role} {method} {url}: site {value}")
        # Feeds and the site calendar name their site as "site": checked above.
        if url.startswith("/api/v1/sites/") and not url.endswith(("/feeds/", "/calendar/")):
            codes = [s["code"] for s in body.get("results", [body])]
            leaks.extend(f"{role} {url}: site {c}" for c in codes if c not in readable_sites[role])
        for participant in _objects_with(body, "arm"):
            pharmacist_at_home = (
                role == Role.UNBLINDED_PHARMACIST and participant["study_id"] == "BERLIN-001"
            )
            if participant["arm"] is not None and not pharmacist_at_home:
                arms_shown.append(f"{role} {method} {url}: arm of {participant['study_id']}")

    def may_read_study(role: str, study_id: str) -> bool:
        # Participants registered during the matrix are all at Berlin.
        if study_id.startswith("NEW-"):
            return reads(role, "own")
        return study_id in readable_study_ids[role]

    for role in [*ROLES, "nobody"]:
        client = world.client(role)
        for method, template, kind in DETAIL_READS:
            for target in TARGETS:
                url = template.format(ids[kind][target])
                allowed = reads_trial(role, target) if kind == "trial" else reads(role, target)
                expected = (200, None) if allowed else (404, "not-found")
                check(role, method, url, expected, client.get(url))
                # Methods the endpoint does not take: 405 for anyone signed in, whatever the id.
                for other in ("PUT", "PATCH", "DELETE"):
                    check(
                        role,
                        other,
                        url,
                        (405, "method-not-allowed"),
                        getattr(client, other.lower())(url, {}, format="json"),
                    )
        for method, template, kind, body in CHANGES:
            for target in TARGETS:
                url = template.format(ids[kind][target])
                if writes(role, target):
                    expected = (412, "precondition-failed")
                elif reads(role, target):
                    expected = (403, "permission-denied")
                else:
                    expected = (404, "not-found")
                response = client.post(
                    url,
                    body,
                    format="json",
                    HTTP_IF_MATCH='"stale"',
                    HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
                )
                check(role, method, url, expected, response)
                if template not in READ_TEMPLATES:  # the approval also answers GET
                    check(role, "GET", url, (405, "method-not-allowed"), client.get(url))
        for method, template, kind, body in PREVIEWS:
            for target in TARGETS:
                url = template.format(ids[kind][target])
                if writes(role, target):
                    expected = PREVIEW_WRITER_ANSWER.get(template, PREVIEW_OK)
                elif reads(role, target):
                    expected = (403, "permission-denied")
                else:
                    expected = (404, "not-found")
                check(role, method, url, expected, client.post(url, body, format="json"))
                check(role, "GET", url, (405, "method-not-allowed"), client.get(url))
        for method, template, kind, body in CREATES:
            for target in TARGETS:
                url = template.format(ids[kind][target])
                if writes(role, target):
                    expected = (201, None)
                elif reads(role, target):
                    expected = (403, "permission-denied")
                else:
                    expected = (404, "not-found")
                response = client.post(
                    url, body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
                )
                check(role, method, url, expected, response)
        for url in LISTS:
            check(role, "GET", url, (200, None), client.get(url))
        for template, kind in FILTERED_LISTS:
            for target in TARGETS:
                url = template.format(ids[kind][target])
                check(role, "GET", url, (200, None), client.get(url))
        # Registering a participant at each target site of NIAMS (other trial: Tsukuba).
        for target in TARGETS:
            body = {
                "trial": ids["trial"][target],
                "site": ids["site"][target],
                "study_id": f"NEW-{role}-{target}",
                "birth_date": "1980-01-01",
                "anchors": {"day1": "2026-03-02"} if target != "other_trial" else {},
            }
            trial_known = reads_trial(role, target)
            if writes(role, target):
                expected = (201, None)
            elif not trial_known:
                expected = (400, "invalid-input")
            elif reads(role, target):
                expected = (403, "permission-denied")
            else:
                expected = (400, "invalid-input")
            response = client.post(
                "/api/v1/participants/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
            )
            check(role, "POST", "/api/v1/participants/", expected, response)

    print(
        f"\nauthorization matrix: {cases} cases, {len(leaks)} cross-site reads or writes, "
        f"{len(arms_shown)} arms shown to blinded roles"
    )
    if mismatches:
        print("\n".join(mismatches))
    assert mismatches == []
    assert leaks == []
    assert arms_shown == []
    assert cases > 900
