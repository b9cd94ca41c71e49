"""A participant's timeline in a real browser at 1366 px: a NIAMS calendar from the participant's
page, a Tsukuba calendar with its taper chart, and both as printed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from participants.models import Participant
from scheduler.models import ScheduledMilestone, ScheduledVisit
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import member_everywhere

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot_path(name: str, tmp_path: Path) -> Path:
    # The README's pictures are refreshed only on request (UPDATE_SCREENSHOTS=1), so a test
    # run leaves git clean.
    if os.environ.get("UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS / name
    return tmp_path / name


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_coordinator_reads_a_niams_and_a_tsukuba_timeline(live_server, tmp_path) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    get_user_model().objects.create_superuser("coordinator", "c@example.org", "a-long-passphrase")
    member_everywhere(get_user_model().objects.get(username="coordinator"))
    niams = Participant.objects.get(study_id="NIH-CC-001", trial__code="niams-ani-vascular")
    tsukuba = Participant.objects.get(study_id="TSUKUBA-001")
    niams_visits = ScheduledVisit.objects.filter(participant=niams).count()
    open_niams = ScheduledVisit.objects.filter(
        participant=niams, status__in=ScheduledVisit.OPEN
    ).count()
    taper_weeks = (
        ScheduledMilestone.objects.filter(participant=tsukuba, dose_mg__isnull=False)
        .exclude(status="cancelled")
        .count()
    )
    base = live_server.url

    with chromium_page() as page:
        page.set_viewport_size({"width": 1366, "height": 900})
        log_in(page, base, "coordinator", "a-long-passphrase")
        page.goto(f"{base}/admin/participants/participant/{niams.pk}/change/")
        page.click("ul.object-tools >> text=Timeline")
        page.wait_for_load_state("load")
        niams_url = page.url
        bands = page.locator("svg.participant-timeline rect.window").count()
        today_lines = page.locator("svg.participant-timeline line.today-line").count()
        book_buttons = page.locator("#timeline-visits a.button", has_text="Book").count()
        # Nothing wider than the window at 1366 px: no sideways scrolling, nothing cut.
        page_width = page.evaluate("document.documentElement.scrollWidth")
        chart_width = page.locator("svg.participant-timeline").bounding_box()["width"]
        page.screenshot(path=str(screenshot_path("timeline-niams.png", tmp_path)), full_page=True)
        page.emulate_media(media="print")
        buttons_printed = page.locator("#timeline-visits a.button").first.is_visible()
        chart_printed = page.locator("svg.participant-timeline").is_visible()
        page.emulate_media(media="screen")

        page.goto(f"{base}/admin/participants/participant/{tsukuba.pk}/timeline/")
        points = page.locator("svg.taper-chart g.dose").count()
        current = page.locator("svg.taper-chart rect.current-week").count()
        cap = page.locator("svg.taper-chart g.cap-line").get_attribute("data-mg")
        target = page.locator("svg.taper-chart g.target-line").get_attribute("data-mg")
        decide = page.locator("table[id^=taper-table] a.button", has_text="Taper decision").count()
        page.screenshot(
            path=str(screenshot_path("timeline-tsukuba-taper.png", tmp_path)), full_page=True
        )

    assert niams_url == f"{base}/admin/participants/participant/{niams.pk}/timeline/"
    assert (bands, today_lines, book_buttons) == (niams_visits, 1, open_niams)
    assert page_width <= 1366 and chart_width <= 1366
    assert (buttons_printed, chart_printed) == (False, True)
    # The demo's Tsukuba participant started 10 weeks ago (PSL a week before Day 1): one
    # point per taper week, the current one highlighted; cap 0.6 mg/kg × 60 kg.
    assert (points, current, cap, target) == (taper_weeks, 1, "36", "7.5")
    assert decide >= 1
