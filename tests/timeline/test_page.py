"""The timeline page: scoped by the participant admin, a fixed number of queries whatever the
calendar's length, the visits' actions next to them, and no arm for a blinded role."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from participants.models import Participant
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll, visit_record_done
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for
from trials.models import Arm

D = dt.date
# 8:00 on 20 February 2026 in New York: NIAMS's screening V1 (12 January) and V2 (day 1,
# 2 February) are past, V3's window (27 February to 5 March) is ahead.
NOW = dt.datetime(2026, 2, 20, 13, 0, tzinfo=dt.UTC)
SVG = "{http://www.w3.org/2000/svg}"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def staff(username: str):
    return get_user_model().objects.create_user(
        username, password="a-long-passphrase", is_staff=True
    )


def enrolled(version, *, site=None, study_id=None, arm_code=None) -> Participant:
    participant = participant_for(
        version,
        anchors={"day1": D(2026, 2, 2)},
        site=site,
        study_id=study_id,
        weight_kg=Decimal(70),
    )
    arm = Arm.objects.get(version=version, code=arm_code) if arm_code else None
    participant_enroll(participant=participant, on=D(2026, 1, 5), arm=arm)
    return participant


def timeline_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_timeline", args=[participant.pk])


def svg_of(html: str, css_class: str) -> ET.Element:
    found = re.search(rf'<svg [^>]*class="{css_class}".*?</svg>', html, re.S)
    assert found is not None, f"no {css_class} SVG in the page"
    return ET.fromstring(found.group(0))


@pytest.fixture
def nih():
    return SiteFactory.create(code="nih-cc", name="NIH Clinical Center")


@pytest.fixture
def niams(import_seed, nih) -> Participant:
    return enrolled(import_seed("000"), site=nih, study_id="NIH-CC-001", arm_code="ANI")


def test_the_timeline_draws_every_visit_and_offers_the_actions_of_open_ones(
    client, niams, nih
) -> None:
    v1 = ScheduledVisit.objects.get(participant=niams, visit_definition__code="V1")
    visit_record_done(visit=v1, actual_date=D(2026, 1, 12), by=None)
    coordinator = member(staff("coordinator"), trial=niams.trial, site=nih)
    sign_in(client, coordinator)

    response = client.get(timeline_url(niams))

    assert response.status_code == 200
    html = response.content.decode()
    svg = svg_of(html, "participant-timeline")
    visits = list(ScheduledVisit.objects.filter(participant=niams).order_by("target_date", "id"))
    drawn = [g.get("data-code") for g in svg.iter(f"{SVG}g") if g.get("class") == "visit"]
    assert drawn == [visit.code for visit in visits]
    today = [line for line in svg.iter(f"{SVG}line") if line.get("class") == "today-line"]
    assert len(today) == 1
    statuses = {g.get("data-code"): g.get("data-status") for g in svg.iter(f"{SVG}g")}
    assert (statuses["V1"], statuses["V2"], statuses["V3"]) == ("done", "overdue", "upcoming")
    # V3's buttons: its four actions, each the admin's own page (form, then preview).
    v3 = next(visit for visit in visits if visit.code == "V3")
    row = re.search(rf'<tr id="visit-{v3.pk}".*?</tr>', html, re.S)
    assert row is not None
    assert re.findall(r'<a class="button" href="([^"]+)">', row.group(0)) == [
        reverse(f"admin:scheduler_scheduledvisit_{name}", args=[v3.pk])
        for name in ("book", "record_done", "mark_missed", "cancel")
    ]
    done_row = re.search(rf'<tr id="visit-{v1.pk}".*?</tr>', html, re.S)
    assert done_row is not None and 'class="button"' not in done_row.group(0)
    # The band links to the row.
    assert f'href="#visit-{v3.pk}"' in html


def test_the_participant_page_links_to_the_timeline(client, niams, nih) -> None:
    sign_in(client, member(staff("coordinator"), trial=niams.trial, site=nih))

    page = client.get(reverse("admin:participants_participant_change", args=[niams.pk]))

    assert page.status_code == 200
    assert f'href="{timeline_url(niams)}"' in page.content.decode()


def test_another_sites_participant_is_a_404(client, import_seed, niams) -> None:
    berlin = SiteFactory.create(code="berlin", timezone="Europe/Berlin")
    elsewhere = member(staff("berlin-coordinator"), trial=niams.trial, site=berlin)
    sign_in(client, elsewhere)

    assert client.get(timeline_url(niams)).status_code == 404
    missing = reverse("admin:participants_participant_timeline", args=[999999])
    assert client.get(missing).status_code == 404


def test_a_blinded_role_sees_no_arm_and_an_unblinded_one_does(client, niams, nih) -> None:
    # NIAMS is double-blind: the coordinator may not see the arm, the pharmacist may.
    coordinator = member(staff("coordinator"), trial=niams.trial, site=nih)
    pharmacist = member(
        staff("pharmacist"), trial=niams.trial, site=nih, role="unblinded_pharmacist"
    )

    sign_in(client, coordinator)
    blinded = client.get(timeline_url(niams)).content.decode()
    sign_in(client, pharmacist)
    unblinded = client.get(timeline_url(niams)).content.decode()

    arm = Arm.objects.get(version=niams.protocol_version, code="ANI").name
    assert arm not in blinded and "timeline-arm" not in blinded
    shown = re.search(r'<td id="timeline-arm">([^<]+)</td>', unblinded)
    assert shown is not None and shown.group(1) == arm
    # The pharmacist reads but does not write: no buttons.
    assert 'class="button"' not in unblinded


def test_the_page_costs_the_same_queries_for_12_and_for_60_visits(client, import_seed, nih) -> None:
    small = enrolled(import_seed("000"), site=nih, study_id="NIH-CC-001")
    large = enrolled(import_seed("002"), site=nih, study_id="NIH-CC-002")
    coordinator = staff("coordinator")
    member(coordinator, trial=small.trial, site=nih)
    member(coordinator, trial=large.trial, site=nih)
    sign_in(client, coordinator)
    sizes = [ScheduledVisit.objects.filter(participant=p).count() for p in (small, large)]

    counts = []
    for participant in (small, large):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(timeline_url(participant)).status_code == 200
        counts.append(len(queries))

    assert sizes == [12, 54]
    # Session, user, memberships, the participant, its visits, its milestones, may-write (asked
    # twice, answered once a request), the admin's own (content types, trial), the
    # participant's actions offered, and the audit entry that records who viewed the record.
    assert counts == [13, 13]


def test_the_participant_page_costs_the_same_queries_for_12_and_for_54_visits(
    client, import_seed, nih
) -> None:
    """Its visit, milestone and reminder rows each show the site's clock or today: the site
    comes with the rows, not with two queries of its own for every row (it did: 90 queries
    here for 12 visits, 184 for 54)."""
    small = enrolled(import_seed("000"), site=nih, study_id="NIH-CC-001")
    large = enrolled(import_seed("002"), site=nih, study_id="NIH-CC-002")
    coordinator = staff("coordinator")
    member(coordinator, trial=small.trial, site=nih)
    member(coordinator, trial=large.trial, site=nih)

    counts, rows = [], []
    # In June: reminders have fallen due since enrollment, so the reminder rows show too.
    with time_machine.travel(dt.datetime(2026, 6, 1, 13, 0, tzinfo=dt.UTC), tick=False):
        sign_in(client, coordinator)
        # Django's content types are read once per process, by whichever page comes first.
        client.get(reverse("admin:participants_participant_change", args=[small.pk]))
        for participant in (small, large):
            url = reverse("admin:participants_participant_change", args=[participant.pk])
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url)
            assert response.status_code == 200
            counts.append(len(queries))
            rows.append(
                {
                    formset.opts.model._meta.model_name: len(formset.formset.forms)
                    for formset in response.context["inline_admin_formsets"]
                }
            )

    assert [r["scheduledvisit"] for r in rows] == [12, 54]
    assert all(r["reminder"] > 0 for r in rows), rows
    assert counts[0] == counts[1]


def test_booking_from_the_timeline_takes_three_clicks(client, niams, nih) -> None:
    sign_in(client, member(staff("coordinator"), trial=niams.trial, site=nih))
    v3 = ScheduledVisit.objects.get(participant=niams, visit_definition__code="V3")
    html = client.get(timeline_url(niams)).content.decode()
    row = re.search(rf'<tr id="visit-{v3.pk}".*?</tr>', html, re.S)
    assert row is not None
    book = re.findall(r'<a class="button" href="([^"]+)">', row.group(0))[0]

    # Click 1: the button opens the form; the coordinator types; click 2: preview; click 3:
    # confirm.
    form = client.get(book)
    assert form.status_code == 200
    typed = {
        "version": str(v3.version),
        "local_date": "2026-03-02",
        "local_time": "09:00",
        "reason": "",
    }
    preview = client.post(book, {**typed, "_preview": "Preview"})
    assert preview.status_code == 200
    assert ScheduledVisit.objects.get(pk=v3.pk).status == "planned"
    confirm = client.post(book, {**typed, "_confirm": "Confirm"})
    assert confirm.status_code == 302

    v3.refresh_from_db()
    assert (v3.status, v3.booked_date) == ("booked", D(2026, 3, 2))
    after = client.get(timeline_url(niams)).content.decode()
    statuses = {
        g.get("data-code"): g.get("data-status")
        for g in svg_of(after, "participant-timeline").iter(f"{SVG}g")
    }
    assert statuses["V3"] == "booked"
