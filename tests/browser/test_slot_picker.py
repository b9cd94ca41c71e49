"""The slot picker and the site's week of bookings in a real browser, with the demo data: a New
York coordinator opens a participant's timeline, picks a free start of a due visit in the week
view of the site's resources and confirms its preview, in at most 3 clicks; the site's week by
resource shows that booking on the scanner's lane. Both pages are the README's screenshots."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command

from scheduler.access import site_today
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.browser.test_admin import chromium_page, log_in
from tests.browser.test_workspace import MONDAY, WIDE, Clicks
from tests.factories import member, participant_for
from trials.models import ProtocolVersion, Site, SiteResource, StaffShift, TrialSite

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@time_machine.travel(MONDAY, tick=True)
def test_a_coordinator_books_from_the_timelines_slot_picker(live_server, tmp_path) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    ny = Site.objects.get(code="nih-cc")
    today = site_today(ny)
    due = (
        ScheduledVisit.objects.filter(
            participant__site=ny,
            participant__trial__code="niams-ani-vascular",
            status="planned",
            window_start__lte=today,
            window_end__gte=today,
        )
        .select_related("participant")
        .order_by("window_end", "id")
        .first()
    )
    # NIH-CC-003's screening visit (V1): the picker offers starts in the site's hours.
    assert due is not None
    lanes_expected = [
        *SiteResource.objects.filter(site=ny)
        .order_by("kind", "name")
        .values_list("name", flat=True),
        *sorted(set(StaffShift.objects.filter(site=ny).values_list("kind", flat=True))),
    ]
    coordinator = get_user_model().objects.create_user(
        "coordinator-ny", password="a-long-passphrase", is_staff=True
    )
    for trial_site in TrialSite.objects.filter(site=ny).select_related("trial"):
        member(coordinator, trial=trial_site.trial, site=ny)
    # A participant whose week 0 (a one-day window, a plan holding the scanner, CAVI, a chair
    # and a nurse) is tomorrow, booked at 08:45: the week by resource has something to show.
    tuesday = today + dt.timedelta(days=1)
    week0 = participant_for(
        ProtocolVersion.objects.get(trial__code="niams-ani-vascular", status="published"),
        anchors={"day1": tuesday},
        site=ny,
        study_id="NIH-CC-090",
    )
    participant_enroll(participant=week0, on=today)
    visit_book(
        visit=ScheduledVisit.objects.get(participant=week0, visit_definition__code="V2"),
        local_date=tuesday,
        local_time=dt.time(8, 45),
        by=None,
    )
    folder = DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    timeline = f"{live_server.url}/admin/participants/participant/{due.participant.pk}/timeline/"

    with chromium_page() as page:
        page.set_viewport_size(WIDE)
        log_in(page, live_server.url, "coordinator-ny", "a-long-passphrase")
        page.goto(timeline)
        clicks = Clicks(page)
        # Each visit whose window is open has its link above the visits; its week is a click.
        clicks(page.locator(f"#picker-choices a[href*='pick={due.pk}#']"))
        heading = page.locator("#slot-picker h2").inner_text()
        shaded = page.locator("#slot-picker thead th.in-window").count()
        first_start = page.locator("#slot-picker tr.lane-free button.slot").first
        picked = first_start.get_attribute("title") or ""
        page.locator("#slot-picker").screenshot(path=str(folder / "slot-picker.png"))
        clicks(first_start)
        preview_title = page.locator("h1").inner_text()
        clicks(page.locator("input[name=_confirm]"))
        back_on = page.url
        message = page.locator("ul.messagelist li").all_inner_texts()

        page.goto(f"{live_server.url}/admin/")
        clicks_to_week = Clicks(page)
        clicks_to_week(page.locator("#nih-cc-bookings-week"))
        zone_line = page.locator("#board-zone").inner_text()
        # Tomorrow's week (the same as today's unless today is a Sunday).
        page.goto(f"{page.url.split('?')[0]}?span=week&day={tuesday}")
        lanes = page.locator("tr.lane-resource th.lane-name").evaluate_all(
            "cells => cells.map(c => c.firstChild.textContent.trim())"
        )
        scanner_tuesday = page.locator(
            f"tr[data-lane='resource-PET/CT 1'] td[data-day='{tuesday}'] ul.lines li"
        ).all_inner_texts()
        page.screenshot(path=str(folder / "site-week.png"), full_page=True)

    assert clicks.count <= 3
    assert heading.startswith(f"Pick a slot for {due.code}: week ")
    assert shaded >= 1
    assert preview_title.startswith("Book / reschedule")
    assert back_on == timeline
    due.refresh_from_db()
    day, at, zone = picked.split(" ")
    assert due.booked_start is not None
    local = due.booked_start.astimezone(ZoneInfo(zone))
    assert (due.status, zone, f"{local:%Y-%m-%d %H:%M}") == ("booked", ny.timezone, f"{day} {at}")
    assert message and due.code in message[0]
    assert clicks_to_week.count == 1
    assert zone_line.startswith("Times are the site's clock (America/New_York)")
    assert lanes == lanes_expected
    assert scanner_tuesday == [
        "09:00–10:50 niams-ani-vascular NIH-CC-090 · V2 – Treatment visit 1 (week 0) · FDGPET"
    ]
