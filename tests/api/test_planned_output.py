"""The planned output serializers (scheduler.api.serializers.PlannedOut) give exactly what
DRF's own per-field machinery gives, on every kind of row the API shows: planned, booked,
done late with a reason, missed, unscheduled (no visit definition), procedures not done,
milestones with and without a dose, in English and Japanese, over the site list and the
calendar."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.utils import translation
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from scheduler.api import serializers as out
from scheduler.api import views
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.services import visit_add_unscheduled
from tests.api.conftest import World

pytestmark = pytest.mark.django_db


def _vary(world: World) -> None:
    """Rows in every state VisitOut and MilestoneOut present."""
    berlin = world.people["BERLIN-001"]
    visits = list(berlin.visits.order_by("target_date", "id"))
    booked, late, missed = visits[1], visits[2], visits[3]
    start = dt.datetime(2026, 2, 16, 8, 30, tzinfo=dt.UTC)
    ScheduledVisit.objects.filter(pk=booked.pk).update(
        status=ScheduledVisit.Status.BOOKED, booked_start=start, booked_date=start.date()
    )
    ScheduledVisit.objects.filter(pk=late.pk).update(
        status=ScheduledVisit.Status.DONE,
        actual_start=start + dt.timedelta(days=9, minutes=7),
        actual_date=late.target_date + dt.timedelta(days=9),
        deviation_days=9,
        reason="Participant was travelling; 遅延",
    )
    ScheduledVisit.objects.filter(pk=missed.pk).update(status=ScheduledVisit.Status.MISSED)
    ScheduledProcedure.objects.filter(visit=late).update(
        status="not_done", not_done_reason="Scanner down"
    )
    visit_add_unscheduled(
        participant=berlin,
        local_date=dt.date(2026, 1, 19),
        reason="Flare",
        by=world.users["coordinator"],
    )
    taper = ScheduledMilestone.objects.filter(participant=world.people["OSAKA-001"])
    first = taper.order_by("due_date", "id").first()
    assert first is not None and taper.exclude(dose_mg=None).exists()
    ScheduledMilestone.objects.filter(pk=first.pk).update(dose_mg=Decimal("7.50"))


def _both(monkeypatch: pytest.MonkeyPatch, make: Any) -> tuple[bytes, bytes]:
    """`make()`'s data rendered by the planned serializers, then by DRF's own code."""
    planned = JSONRenderer().render(make())
    with monkeypatch.context() as patched:
        patched.setattr(
            out.PlannedOut, "to_representation", serializers.Serializer.to_representation
        )
        reference = JSONRenderer().render(make())
    return planned, reference


@pytest.mark.parametrize("language", ["en", "ja"])
def test_visit_lists_and_calendars_are_drf_output_byte_for_byte(
    world: World, monkeypatch: pytest.MonkeyPatch, language: str
) -> None:
    _vary(world)
    today = views._SiteToday()
    with translation.override(language):

        def page() -> Any:
            rows = views._visits(ScheduledVisit.objects.order_by("target_date", "id"))
            return out.VisitOut(list(rows), many=True, context={"glance": today.glance}).data

        def one() -> Any:
            visit = views._visits(ScheduledVisit.objects.all(), many=False).get(
                pk=world.visit("BERLIN-001").pk
            )
            return out.VisitOut(visit, context={"glance": today.glance}).data

        def calendar(study_id: str) -> Any:
            participant = world.people[study_id]
            milestones = list(
                participant.milestones.select_related("rule").order_by("due_date", "id")
            )
            data = {
                "participant": participant.pk,
                "study_id": participant.study_id,
                "site": participant.site.code,
                "site_today": today(participant.site),
                "visits": views._visits(participant.visits.order_by("target_date", "id")),
                "milestones": milestones,
                "taper_doses": [m for m in milestones if m.dose_mg is not None],
            }
            return out.CalendarOut(data, context={"glance": today.glance}).data

        for make in (page, one, lambda: calendar("BERLIN-001"), lambda: calendar("OSAKA-001")):
            planned, reference = _both(monkeypatch, make)
            assert planned == reference

    listed = json.loads(_both(monkeypatch, page)[0])
    by_status = {row["status"] for row in listed}
    assert {"planned", "booked", "done", "missed"} <= by_status
    unscheduled = [row for row in listed if row["unscheduled_reason"]]
    assert [(row["code"], row["unscheduled_reason"]) for row in unscheduled] == [
        ("UNSCHEDULED", "Flare")
    ]
    late = next(row for row in listed if row["deviation_days"] == 9)
    assert {p["status"] for p in late["procedures"]} == {"not_done"}
    assert late["actual_start"].endswith("Z")
    osaka = json.loads(_both(monkeypatch, lambda: calendar("OSAKA-001"))[0])
    assert osaka["taper_doses"][0]["dose_mg"] == "7.50"


def test_procedures_without_a_prefetch_come_in_the_protocols_order(world: World) -> None:
    """A visit read without the list prefetch (after a change, say) shows the same
    procedures, in the same order, as one read through `_visits`."""
    visit = world.visit("BERLIN-001")
    plain = ScheduledVisit.objects.get(pk=visit.pk)
    prefetched = views._visits(ScheduledVisit.objects.filter(pk=visit.pk)).get()
    assert ScheduledVisit.PROCEDURES_IN_ORDER in prefetched.__dict__
    assert ScheduledVisit.PROCEDURES_IN_ORDER not in plain.__dict__
    codes = [p.procedure.code for p in plain.procedures_in_order]
    assert codes == [p.procedure.code for p in prefetched.procedures_in_order]
    assert codes == list(
        ScheduledProcedure.objects.filter(visit=visit)
        .order_by("procedure__order", "id")
        .values_list("procedure__code", flat=True)
    )
    assert len(codes) > 1


def test_the_api_serializers_share_one_plan_per_class() -> None:
    """The calendar's and the lists' serializers build their fields once per process, not
    once per response (what made a calendar spend 0.8 ms building fields)."""
    for cls in (out.VisitOut, out.MilestoneOut, out.CalendarOut, out.ScheduledProcedureOut):
        plan = out._class_plan(cls)
        assert plan is not None, cls
        assert [name for name, _get, _bind in plan] == list(cls().fields)


def test_a_shared_plan_answers_each_response_with_its_own_context(world: World) -> None:
    """Method fields and nested serializers read the context of the response being made,
    not the one the class's plan was first made for."""
    visit = views._visits(ScheduledVisit.objects.all(), many=False).get(
        pk=world.visit("BERLIN-001").pk
    )
    first = out.VisitOut(visit, context={"glance": lambda row: "due"}).data
    second = out.VisitOut(visit, context={"glance": lambda row: "overdue"}).data
    assert (first["glance_status"], second["glance_status"]) == ("due", "overdue")
    data = {
        "participant": 1,
        "study_id": "X",
        "site": "S",
        "site_today": dt.date(2026, 1, 5),
        "visits": [visit],
        "milestones": [],
        "taper_doses": [],
    }
    for status in ("booked", "missed"):
        calendar = out.CalendarOut(data, context={"glance": lambda row, s=status: s}).data
        assert calendar["visits"][0]["glance_status"] == status


def test_a_serializer_that_chooses_its_fields_keeps_a_plan_per_instance() -> None:
    """A class whose fields may depend on the response (its own `get_fields` or `__init__`)
    is never given a shared plan: each instance's own fields are used."""

    class Chooses(out.PlannedOut):
        a = serializers.CharField()
        b = serializers.CharField()

        def get_fields(self) -> Any:
            fields = super().get_fields()
            if self.context.get("hide_b"):
                del fields["b"]
            return fields

    class Unknown(out.PlannedOut):
        a = serializers.JSONField()

    row = type("Row", (), {"a": "x", "b": "y"})()
    assert out._class_plan(Chooses) is None
    assert out._class_plan(Unknown) is None
    assert Chooses(row).data == {"a": "x", "b": "y"}
    assert Chooses(row, context={"hide_b": True}).data == {"a": "x"}
    assert Unknown(row).data == {"a": "x"}
