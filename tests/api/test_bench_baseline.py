"""bench/api.py's same-body baselines answer what the API answers, field for field.

The API's throughput target is measured against a minimal view (`.values()` and orjson) that
does the same work: if the API's body grows a field, the baseline must grow it too, or the
ratio would compare unequal work. The bench checks it before it measures; so does this test,
on a calendar with a booked, a done and a moved visit, in two zones.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from bench.api import _baseline_urls, _require_same_body
from scheduler.models import ScheduledVisit

urlpatterns = _baseline_urls()

pytestmark = pytest.mark.urls(__name__)


def _vary(world) -> None:
    """A booked visit (an instant with microseconds), a done one with a deviation, a
    cancelled one: every kind of value the bodies carry."""
    for study_id in ("BERLIN-001", "TOKYO-001"):
        visits = list(
            ScheduledVisit.objects.filter(participant=world.people[study_id]).order_by("id")
        )
        at = dt.datetime(2026, 2, 2, 8, 30, 0, 5, tzinfo=dt.UTC)
        ScheduledVisit.objects.filter(pk=visits[0].pk).update(
            status="done", actual_start=at, actual_date=at.date(), deviation_days=3
        )
        ScheduledVisit.objects.filter(pk=visits[1].pk).update(
            status="booked",
            booked_start=at + dt.timedelta(days=30),
            booked_date=(at + dt.timedelta(days=30)).date(),
        )
        ScheduledVisit.objects.filter(pk=visits[2].pk).update(
            status="cancelled", reason="Withdrew: moved away; ⟨reason⟩"
        )


@pytest.mark.parametrize("study_id", ["BERLIN-001", "TOKYO-001"])
def test_the_calendar_baseline_answers_the_apis_body(world, study_id):
    _vary(world)
    participant = world.people[study_id]
    # The sponsor's monitor reads every site of the trial.
    api = world.client("sponsor_monitor").get(f"/api/v1/participants/{participant.pk}/calendar/")
    baseline = Client().get(f"/bench/same/calendar/{participant.pk}/")

    assert api.status_code == baseline.status_code == 200
    body = api.json()
    assert len(body["visits"]) == 12
    assert [v["glance_status"] for v in body["visits"][:3]] == [
        "out_of_window",
        "booked",
        "cancelled",
    ]
    assert baseline.json() == body


def test_the_site_list_baseline_answers_the_apis_page(world):
    _vary(world)
    query = f"site=berlin&trial={world.trial.code}&page_size=200"
    api = world.client("coordinator").get(f"/api/v1/visits/?{query}")
    baseline = Client().get(f"/bench/same/visits/?{query}")

    assert api.status_code == baseline.status_code == 200
    results = api.json()["results"]
    assert {v["study_id"] for v in results} == {"BERLIN-001"}
    assert baseline.json()["results"] == results


def test_the_bench_refuses_a_baseline_whose_body_differs():
    api = {"results": [{"id": 1, "etag": '"visit-1-v1"', "name": "Day 1"}]}
    other = {"results": [{"id": 1, "etag": '"visit-1-v2"', "name": "Day 1"}]}

    _require_same_body("list", api, api, "results")
    with pytest.raises(SystemExit, match=r"list: the baseline's body differs at 0: \['etag'\]"):
        _require_same_body("list", api, other, "results")
    with pytest.raises(SystemExit, match="differs in length"):
        _require_same_body("list", api, {"results": []}, "results")
