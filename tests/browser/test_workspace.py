"""The coordinator's start page in a real browser, with the demo data: a coordinator of the New
York site sees only their site's visits of today, books a due visit and records another as
done from the start page, each in at most 3 clicks (plus typing); the visit and participant
lists show every column on a 1366 px wide screen, beside the menu and the filters."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command

from scheduler.access import site_today
from scheduler.models import ScheduledVisit
from scheduler.services import visit_book
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import member
from trials.models import Site, TrialSite

# Monday 7 December 2026, 14:00 UTC: 09:00 in New York, 23:00 in Tokyo (the same date at
# both). The clock ticks on from there, in the live server's thread as in the test's.
MONDAY = dt.datetime(2026, 12, 7, 14, 0, tzinfo=dt.UTC)
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "start-page.png"
WIDE = {"width": 1366, "height": 768}


def book_today(site: Site, at: dt.time) -> ScheduledVisit:
    """Book a planned visit of the site for today at `at` (site-local), a deviation if its
    window is elsewhere: the demo's own bookings are all ahead."""
    today = site_today(site)
    visit = (
        ScheduledVisit.objects.filter(participant__site=site, status="planned")
        .filter(window_start__gt=today)
        .order_by("target_date", "id")
        .first()
    )
    assert visit is not None
    visit_book(
        visit=visit, local_date=today, local_time=at, by=None, reason="seen early, on request"
    )
    return visit


class Clicks:
    """Counts the clicks a person makes (typing is not a click)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.count = 0

    def __call__(self, locator: Any) -> None:
        self.count += 1
        locator.click()
        self.page.wait_for_load_state("load")


def overflow(page: Any) -> int:
    """How many pixels of the list are hidden (scrolled off) beside the filters; 0: none."""
    return int(
        page.evaluate(
            "() => { const r = document.querySelector('#changelist .results');"
            " return r.scrollWidth - r.clientWidth; }"
        )
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@time_machine.travel(MONDAY, tick=True)
def test_a_coordinator_works_from_the_start_page(live_server, tmp_path) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    ny = Site.objects.get(code="nih-cc")
    tokyo = Site.objects.get(code="tsukuba")
    mine = book_today(ny, dt.time(16, 0))
    theirs = book_today(tokyo, dt.time(23, 45))
    mine_id, theirs_id = mine.participant.study_id, theirs.participant.study_id
    coordinator = get_user_model().objects.create_user(
        "coordinator-ny", password="a-long-passphrase", is_staff=True
    )
    for trial_site in TrialSite.objects.filter(site=ny).select_related("trial"):
        member(coordinator, trial=trial_site.trial, site=ny)
    booked_today_ny = sorted(
        ScheduledVisit.objects.filter(
            participant__site=ny, status="booked", booked_date=site_today(ny)
        ).values_list("participant__study_id", flat=True)
    )
    screenshot = (
        DOCS_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "start-page.png"
    )

    with chromium_page() as page:
        page.set_viewport_size(WIDE)
        log_in(page, live_server.url, "coordinator-ny", "a-long-passphrase")
        sites_shown = page.locator("section.workspace-site").evaluate_all(
            "sections => sections.map(s => s.dataset.site)"
        )
        today_rows = page.locator("#nih-cc-today td.who a").all_inner_texts()
        page_text = page.locator("#content-main").inner_text()
        page.screenshot(path=str(screenshot), full_page=True)

        # Book the first visit whose window is open: Book, Preview, Confirm.
        book = Clicks(page)
        due_row = page.locator("#nih-cc-due tr.workspace-row").first
        due_visit = (
            due_row.locator("td.who a").inner_text(),
            due_row.locator("td.what").inner_text(),
        )
        book(due_row.get_by_role("link", name="Book"))
        window_shown = page.locator("#lifecycle-summary").inner_text()
        page.fill("#id_local_time", "15:30")
        book(page.locator("input[name=_preview]"))
        book(page.locator("input[name=_confirm]"))
        booked_message = page.locator("ul.messagelist li").all_inner_texts()

        # Record the visit booked for today as done: Record done, Preview, Confirm.
        page.goto(f"{live_server.url}/admin/")
        record = Clicks(page)
        # (The study id alone is not enough: NIH-CC-001 is in two trials at the site.)
        record(page.locator(f'#nih-cc-today a[href$="/scheduledvisit/{mine.pk}/record-done/"]'))
        page.fill("#id_actual_time", "09:05")
        page.fill("#id_reason", "seen early, on request")
        record(page.locator("input[name=_preview]"))
        record(page.locator("input[name=_confirm]"))
        done_message = page.locator("ul.messagelist li").all_inner_texts()

        # The lists: every column inside a 1366 px screen.
        page.goto(f"{live_server.url}/admin/scheduler/scheduledvisit/")
        visit_columns = page.locator("#result_list thead th").all_inner_texts()
        visits_hidden = overflow(page)
        page.screenshot(path=str(tmp_path / "visit-list.png"))
        page.goto(f"{live_server.url}/admin/participants/participant/")
        participant_columns = page.locator("#result_list thead th").all_inner_texts()
        participants_hidden = overflow(page)
        page.screenshot(path=str(tmp_path / "participant-list.png"))

    assert sites_shown == ["nih-cc"]
    assert sorted(today_rows) == booked_today_ny
    assert mine_id in today_rows
    assert theirs_id not in page_text
    assert "University of Tsukuba Hospital" not in page_text

    assert book.count <= 3 and record.count <= 3
    assert "window" in window_shown
    booked_visit = ScheduledVisit.objects.get(
        participant__study_id=due_visit[0],
        participant__site=ny,
        status="booked",
        booked_date=site_today(ny),
        booked_start__time=dt.time(20, 30),  # 15:30 EST
    )
    assert due_visit[1].startswith(booked_visit.code)
    assert "Mon 7 Dec 2026 15:30 EST" in booked_message[0]

    mine.refresh_from_db()
    assert (mine.status, mine.actual_date) == ("done", dt.date(2026, 12, 7))
    assert "2026-12-07" in done_message[0]

    assert (visits_hidden, participants_hidden) == (0, 0), (visit_columns, participant_columns)
