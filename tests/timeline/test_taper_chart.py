"""The Tsukuba prednisolone taper as a dose-over-time chart: the doses per week, the cap and
target lines, the current week, past and planned weeks, held weeks."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.urls import reverse

from participants.models import Participant
from scheduler.admin.timeline import participant_timeline
from scheduler.services import participant_enroll, taper_adjust
from scheduler.timeline import (
    TAPER_PLOT_BOTTOM,
    TAPER_PLOT_HEIGHT,
    TAPER_PLOT_LEFT,
    TAPER_PLOT_WIDTH,
    render_taper,
    taper_y_max,
)
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for

D = dt.date
SVG = "{http://www.w3.org/2000/svg}"
# Noon on Wednesday 25 March 2026 in Tsukuba: week 3 of the taper (from Monday 23 March).
NOW = dt.datetime(2026, 3, 25, 3, 0, tzinfo=dt.UTC)
# 0.6 mg/kg/day × 60 kg = 36 mg/day for 2 weeks, then weekly to 7.5 mg/day or less at week 12.
DOSES = ["36", "36", "31", "27", "23", "20", "17", "15", "13", "11", "9", "8", "7"]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def tsukuba(import_seed) -> Participant:
    participant = participant_for(
        import_seed("001"),
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
        weight_kg=Decimal(60),
        site=SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo", country="JP"),
        study_id="TSUKUBA-001",
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


def chart_of(participant: Participant):
    read = participant_timeline(participant, today=D(2026, 3, 25))
    (section,) = read.tapers
    return section.chart


def points(svg: str) -> list[tuple[str | None, ...]]:
    root = ET.fromstring(svg)
    return [
        (g.get("data-week"), g.get("data-dose"), g.get("data-status"), c.get("cx"), c.get("cy"))
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "dose"
        for c in g.iter(f"{SVG}circle")
    ]


def test_the_chart_has_one_point_per_week_at_its_dose(tsukuba) -> None:
    chart = chart_of(tsukuba)
    svg = render_taper(chart)

    assert taper_y_max(chart) == 40  # 36 mg/day with room above, to a multiple of 5
    column = TAPER_PLOT_WIDTH / 13
    expected = [
        (
            str(week),
            dose,
            "past" if week < 3 else "current" if week == 3 else "planned",
            f"{TAPER_PLOT_LEFT + (week + 0.5) * column:.2f}".rstrip("0").rstrip("."),
            f"{TAPER_PLOT_BOTTOM - float(dose) / 40 * TAPER_PLOT_HEIGHT:.2f}".rstrip("0").rstrip(
                "."
            ),
        )
        for week, dose in enumerate(DOSES)
    ]
    assert points(svg) == expected
    assert [w.due for w in chart.weeks][:4] == [
        D(2026, 3, 2),
        D(2026, 3, 9),
        D(2026, 3, 16),
        D(2026, 3, 23),
    ]


def test_the_cap_and_target_lines_say_their_values(tsukuba) -> None:
    root = ET.fromstring(render_taper(chart_of(tsukuba)))
    lines = {
        g.get("class"): (g.get("data-mg"), line.get("y1"), "".join(g.itertext()))
        for g in root.iter(f"{SVG}g")
        for line in g.iter(f"{SVG}line")
        if g.get("class") in ("cap-line", "target-line")
    }

    assert lines == {
        "cap-line": ("36", "90", "cap 36 mg/day (0.6 mg/kg × 60 kg)"),
        "target-line": ("7.5", "275.25", "target ≤ 7.5 mg/day from week 12"),
    }


def test_the_current_week_is_highlighted_and_past_and_planned_weeks_are_drawn_apart(
    tsukuba,
) -> None:
    root = ET.fromstring(render_taper(chart_of(tsukuba)))
    current = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "current-week"]
    steps = [ln for ln in root.iter(f"{SVG}line") if ln.get("class") == "dose-step"]

    assert [r.get("data-week") for r in current] == ["3"]
    # Given weeks (0 to 3) solid, planned ones dashed.
    assert [ln.get("stroke-dasharray") for ln in steps] == [None] * 4 + ["6 4"] * 9


def test_a_held_week_is_shaded_and_labelled_and_keeps_the_dose(tsukuba) -> None:
    investigator = get_user_model().objects.create_user("investigator")
    taper_adjust(
        participant=tsukuba,
        milestone_code="PSL_TAPER",
        week=4,
        dose_mg=None,
        by=investigator,
        reason="flare: SLEDAI up",
    )
    root = ET.fromstring(render_taper(chart_of(tsukuba)))
    held = [r.get("data-week") for r in root.iter(f"{SVG}rect") if r.get("class") == "held"]
    labels = [
        "".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("class") == "held-label"
    ]
    doses = [g.get("data-dose") for g in root.iter(f"{SVG}g") if g.get("class") == "dose"]

    assert held == ["4"]
    assert labels == ["held"]
    # Week 4 keeps week 3's 27 mg/day; the reductions come a week later.
    assert doses[:6] == ["36", "36", "31", "27", "27", "23"]


def test_the_page_offers_a_taper_decision_on_each_week_still_to_come(client, tsukuba) -> None:
    coordinator = get_user_model().objects.create_user("coordinator", is_staff=True)
    member(coordinator, trial=tsukuba.trial, site=tsukuba.site)
    sign_in(client, coordinator)

    html = client.get(
        reverse("admin:participants_participant_timeline", args=[tsukuba.pk])
    ).content.decode()

    table = re.search(
        r'<table class="timeline-table" id="taper-table-PSL_TAPER">.*?</table>', html, re.S
    )
    assert table is not None
    rows = re.findall(r"<tr id=\"milestone-\d+\">(.*?)</tr>", table.group(0), re.S)
    doses = [re.findall(r'<td class="nowrap">([^<]*)</td>', row)[2] for row in rows]
    decide = [
        re.findall(r'<a class="button" href="([^"]+)">', row.replace("&amp;", "&")) for row in rows
    ]
    taper = reverse("admin:participants_participant_taper", args=[tsukuba.pk])
    assert doses == DOSES
    # Weeks 0 to 2 are past; the current week (3) and the planned ones can be decided.
    assert decide == [[]] * 3 + [
        [f"{taper}?milestone_code=PSL_TAPER&week={week}"] for week in range(3, 13)
    ]
    assert 'class="taper-chart"' in html
