# ruff: noqa: F811  (the API fixtures are imported from tests.api.conftest)
"""Adversarial review of 4f5a332..HEAD: shared serializer plans, gunicorn's gc.freeze, the
enrollment's day (`enrolled_on`) and the end-date check built on it.

Clock: tests.api.conftest freezes it at 2026-01-20 08:00Z (Berlin 09:00) unless a test travels.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from html.parser import HTMLParser
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler.access import site_today
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll, participant_withdraw
from tests.api.conftest import World, fresh_throttle_counts, frozen_clock, world  # noqa: F401
from tests.factories import member, participant_for
from trials.models import ProtocolVersion, Site

# ----------------------------------------------------------------------------------------
# Shared serializer plans under concurrent requests


def _api(user: Any, language: str) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE=language)
    client.force_authenticate(type(user).objects.get(pk=user.pk))
    return client


@pytest.mark.django_db(transaction=True)
def test_concurrent_calendars_and_lists_answer_as_each_would_alone(world: World) -> None:
    """Four threads, as a gunicorn worker runs, each serving other users, sites, roles and
    languages through the same serializer classes: every answer is the one the same request
    gets alone (its own site's glance, its own language's names, no arm or contact leaking).
    """
    osaka_coordinator = member(
        type(world.users["coordinator"]).objects.create_user("osaka-coordinator"),
        trial=world.other_trial,
        site=world.osaka,
    )
    berlin, tokyo, osaka = (world.people[s] for s in ("BERLIN-001", "TOKYO-001", "OSAKA-001"))
    # Tokyo is a day ahead of Berlin at this instant: their glances differ if one leaks.
    cases = [
        (world.users["coordinator"], "en", f"/api/v1/participants/{berlin.pk}/calendar/"),
        (world.users["sponsor_monitor"], "ja", f"/api/v1/participants/{tokyo.pk}/calendar/"),
        (osaka_coordinator, "ja", f"/api/v1/participants/{osaka.pk}/calendar/"),
        (osaka_coordinator, "en", f"/api/v1/participants/{osaka.pk}/calendar/"),
        (osaka_coordinator, "ja", "/api/v1/visits/?site=osaka&page_size=200"),
        (world.users["sponsor_monitor"], "en", "/api/v1/visits/?page_size=200"),
        (world.users["coordinator"], "ja", f"/api/v1/participants/{berlin.pk}/"),
    ]
    with time_machine.travel(dt.datetime(2026, 2, 4, 20, 0, tzinfo=dt.UTC), tick=False):
        alone = []
        for user, language, url in cases:
            response = _api(user, language).get(url)
            assert response.status_code == 200, (url, response.content)
            alone.append(response.json())
        # The Japanese reader sees the protocol's Japanese names, the English one the file's.
        assert alone[2]["visits"][0]["name"] != alone[3]["visits"][0]["name"]
        assert {v["glance_status"] for v in alone[0]["visits"]} != {
            v["glance_status"] for v in alone[1]["visits"]
        } or alone[0]["site_today"] != alone[1]["site_today"]

        mismatches: list[tuple[int, Any]] = []
        failures: list[BaseException] = []
        start = threading.Barrier(4)

        def serve(offset: int) -> None:
            try:
                start.wait()
                for turn in range(12):
                    index = (offset + turn) % len(cases)
                    user, language, url = cases[index]
                    response = _api(user, language).get(url)
                    if response.status_code != 200 or response.json() != alone[index]:
                        mismatches.append((index, response.status_code))
            except BaseException as error:  # noqa: BLE001 - reported below
                failures.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=serve, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert mismatches == []


# ----------------------------------------------------------------------------------------
# The enrollment's day: the demo loader


@pytest.mark.django_db
def test_the_demo_enrolls_each_participant_on_or_before_its_sites_today() -> None:
    # 20:00 UTC: 15:00 in New York on the 10th, already 05:00 on the 11th in Tokyo.
    with time_machine.travel(dt.datetime(2026, 3, 10, 20, 0, tzinfo=dt.UTC), tick=False):
        call_command("load_demo", "--no-admin", stdout=io.StringIO())
        late = {
            f"{p.trial.code}/{p.study_id}": (p.enrolled_on, site_today(p.site))
            for p in Participant.objects.filter(status="enrolled").select_related("trial", "site")
            if p.enrolled_on is None or p.enrolled_on > site_today(p.site)
        }
        assert late == {}
        # What that blocks: the New York coordinator withdrawing a demo participant today.
        nih = Participant.objects.filter(trial__code="jasmine-myositis", site__code="nih-cc").get()
        participant_withdraw(participant=nih, on=dt.date(2026, 3, 10), by=None, reason="moved")  # type: ignore[arg-type]
        nih.refresh_from_db()
        assert (nih.status, nih.ended_on) == ("withdrawn", dt.date(2026, 3, 10))


# ----------------------------------------------------------------------------------------
# The admin's "enrolled" column


class _Rows(HTMLParser):
    """The cells of the changelist's result table, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._inside = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "result_list") in attrs:
            self._inside = True
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _enrolled_at(version: ProtocolVersion, site: Site, study_id: str, *, on: dt.date, at: Any):
    participant = participant_for(
        version, anchors={"day1": dt.date(2026, 2, 16)}, site=site, study_id=study_id
    )
    with time_machine.travel(at, tick=False):
        participant_enroll(participant=participant, on=on)
    return participant


@pytest.mark.django_db
def test_the_enrolled_column_sorts_by_the_day_it_shows(world: World) -> None:
    version = world.people["BERLIN-001"].protocol_version
    # BERLIN-001: took place on the 5th, recorded at the frozen clock (the 20th). BERLIN-051:
    # on the 3rd, recorded on the 18th (a coordinator catching up) ...
    _enrolled_at(
        version,
        world.berlin,
        "BERLIN-051",
        on=dt.date(2026, 1, 3),
        at=dt.datetime(2026, 1, 18, 9, 0, tzinfo=dt.UTC),
    )
    # ... and on the 12th, recorded the same day.
    _enrolled_at(
        version,
        world.berlin,
        "BERLIN-052",
        on=dt.date(2026, 1, 12),
        at=dt.datetime(2026, 1, 12, 9, 0, tzinfo=dt.UTC),
    )
    person: Client = world.signed_in("coordinator")
    url = reverse("admin:participants_participant_changelist")
    enrolled_index = 3  # study id, where, status, enrolled (no checkbox column)

    shown: dict[str, list[tuple[str, str]]] = {}
    for order in (f"{enrolled_index}", f"-{enrolled_index}"):
        response = person.get(url, {"o": order})
        assert response.status_code == 200
        rows = _Rows()
        rows.feed(response.content.decode())
        shown[order] = [(row[0], row[3]) for row in rows.rows[1:]]  # after the header
    ascending = [
        ("BERLIN-051", "2026-01-03"),
        ("BERLIN-001", "2026-01-05"),
        ("BERLIN-052", "2026-01-12"),
    ]
    assert shown == {
        f"{enrolled_index}": ascending,
        f"-{enrolled_index}": ascending[::-1],
    }


# ----------------------------------------------------------------------------------------
# An end date at the enrollment's day, on a site far ahead of UTC


@pytest.mark.django_db
def test_a_participant_enrolled_on_kiritimatis_today_may_be_withdrawn_that_day(
    world: World,
) -> None:
    """At 11:00 UTC on the 20th it is already the 21st on Kiritimati (UTC+14): enrolled
    and withdrawn on the site's today, through the API, the 21st is both's day."""
    from tests.factories import SiteFactory

    site = SiteFactory.create(code="kiritimati", timezone="Pacific/Kiritimati")
    member(world.users["coordinator"], trial=world.trial, site=site)
    with time_machine.travel(dt.datetime(2026, 1, 20, 11, 0, tzinfo=dt.UTC), tick=False):
        participant = participant_for(
            world.people["BERLIN-001"].protocol_version,
            anchors={"day1": dt.date(2026, 2, 16)},
            site=site,
            study_id="KIRI-001",
        )
        client = world.client("coordinator")
        etag = client.get(f"/api/v1/participants/{participant.pk}/")["ETag"]
        enrolled = client.post(
            f"/api/v1/participants/{participant.pk}/enroll/",
            {"on": "2026-01-21"},
            format="json",
            HTTP_IF_MATCH=etag,
            HTTP_IDEMPOTENCY_KEY="kiri-enroll",
        )
        assert enrolled.status_code == 200, enrolled.content
        assert enrolled.json()["enrolled_on"] == "2026-01-21"
        withdrawn = client.post(
            f"/api/v1/participants/{participant.pk}/withdraw/",
            {"on": "2026-01-21", "reason": "moved"},
            format="json",
            HTTP_IF_MATCH=enrolled["ETag"],
            HTTP_IDEMPOTENCY_KEY="kiri-withdraw",
        )
    assert withdrawn.status_code == 200, withdrawn.content
    assert (withdrawn.json()["status"], withdrawn.json()["ended_on"]) == (
        "withdrawn",
        "2026-01-21",
    )
    assert not ScheduledVisit.objects.filter(
        participant=participant, status__in=ScheduledVisit.OPEN
    ).exists()
