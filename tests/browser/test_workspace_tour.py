"""Issue 10's tour in a real browser, with the demo data: a coordinator records a visit done 3
days late from the start page, sees in the preview the call that moves with it, confirms in
3 clicks, sees the timeline change, and reads the same start page in Japanese. Then the
screening log and a site's amendment preview, whose screenshots the README shows."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from scheduler.access import site_today
from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.browser.test_admin import chromium_page, log_in
from tests.browser.test_workspace import MONDAY, WIDE, Clicks
from tests.factories import member, participant_for
from tests.scheduler.test_amendments_and_audit import tsukuba_amendment
from trials.models import ProtocolVersion, Site, TrialSite

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot_path(name: str, tmp_path: Path) -> Path:
    # Rewritten in docs/ only on purpose (UPDATE_SCREENSHOTS=1), so a test run leaves git clean.
    return (SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path) / name


def late_niams_visit(site: Site) -> ScheduledVisit:
    """A NIAMS participant at `site` whose week-4 infusion (V3) was booked for 3 days ago and
    not recorded: overdue on the start page. Its safety call V3C counts from V3's actual day."""
    version = ProtocolVersion.objects.get(trial__code="niams-ani-vascular", label="1.0")
    today = site_today(site)
    participant = participant_for(
        version, anchors={"day1": today - dt.timedelta(days=31)}, site=site, study_id="TOUR-001"
    )
    participant_enroll(participant=participant, on=today - dt.timedelta(days=32))
    v3 = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V3")
    # Booked back then, when that day was still ahead.
    with time_machine.travel(MONDAY - dt.timedelta(days=5), tick=False):
        visit_book(
            visit=v3,
            local_date=today - dt.timedelta(days=3),
            local_time=dt.time(9, 0),
            by=None,
            reason="",
        )
    return v3


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@time_machine.travel(MONDAY, tick=True)
def test_the_coordinators_tour(live_server, tmp_path) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    call_command("load_demo", "--no-admin", stdout=io.StringIO())
    ny = Site.objects.get(code="nih-cc")
    tsukuba = Site.objects.get(code="tsukuba")
    v3 = late_niams_visit(ny)
    today = site_today(ny)
    v3c_target_before = ScheduledVisit.objects.get(
        participant=v3.participant, visit_definition__code="V3C"
    ).target_date
    coordinator = get_user_model().objects.create_user(
        "coordinator-tour", password="a-long-passphrase", is_staff=True
    )
    for trial_site in TrialSite.objects.filter(site__in=[ny, tsukuba]).select_related("trial"):
        member(coordinator, trial=trial_site.trial, site=trial_site.site)
    v11 = tsukuba_amendment()
    tsukuba_site = TrialSite.objects.get(trial=v11.trial, site=tsukuba)
    timeline_url = reverse("admin:participants_participant_timeline", args=[v3.participant_id])

    with chromium_page() as page:
        page.set_viewport_size(WIDE)
        log_in(page, live_server.url, "coordinator-tour", "a-long-passphrase")

        # Record V3 done today, 3 days after it was booked: Record done, Preview, Confirm.
        record = Clicks(page)
        overdue = page.locator(f'#nih-cc-overdue a[href$="/scheduledvisit/{v3.pk}/record-done/"]')
        record(overdue)
        page.fill("#id_actual_date", today.isoformat())
        page.fill("#id_actual_time", "10:00")
        page.fill("#id_reason", "participant had a cold")
        record(page.locator("input[name=_preview]"))
        moved = page.locator("#visit-changes tbody tr").all_inner_texts()
        record(page.locator("input[name=_confirm]"))
        done_message = page.locator("ul.messagelist li").all_inner_texts()

        page.goto(f"{live_server.url}{timeline_url}")
        timeline_tips = page.locator("svg title").evaluate_all(
            "titles => titles.map(t => t.textContent)"
        )

        # The same start page in Japanese: the switch in the header, then the page again.
        page.goto(f"{live_server.url}/admin/")
        english_titles = page.locator("#nih-cc-overdue .title").all_inner_texts()
        page.locator("#language-switch button[lang=ja]").click()
        page.wait_for_load_state("load")
        japanese_lang = page.locator("html").get_attribute("lang")
        japanese_titles = page.locator("#nih-cc-overdue .title").all_inner_texts()
        logout = page.locator("#logout-form button").inner_text()
        page.locator("#language-switch button[lang=en]").click()
        page.wait_for_load_state("load")

        # The screening log, and the preview of a site's approval of an amendment.
        page.goto(f"{live_server.url}/admin/participants/participant/screening-log/")
        page.screenshot(path=str(screenshot_path("screening-log.png", tmp_path)), full_page=True)
        log_rows = page.locator("#screening-log tbody tr").count()
        page.goto(
            f"{live_server.url}" + reverse("admin:trials_trialsite_approve", args=[tsukuba_site.pk])
        )
        page.select_option("#id_version_id", str(v11.pk))
        page.fill("#id_reason", "amendment 1: week-28 visit")
        page.click("input[name=_preview]")
        page.wait_for_load_state("load")
        moved_participants = page.locator("#moved-participants h3").all_inner_texts()
        page.screenshot(
            path=str(screenshot_path("amendment-preview.png", tmp_path)), full_page=True
        )

    v3.refresh_from_db()
    v3c = ScheduledVisit.objects.get(participant=v3.participant, visit_definition__code="V3C")
    assert record.count == 3
    assert (v3.status, v3.actual_date) == ("done", today)
    assert (
        v3c.target_date == today + dt.timedelta(days=7) == v3c_target_before + dt.timedelta(days=3)
    )
    # The preview named the call that moves, before anything was written.
    assert any(row.startswith("V3C") for row in moved), moved
    assert done_message[0].startswith(f"V3 recorded as done on {today.isoformat()}")
    assert any(
        tip.startswith("V3C") and v3c.target_date.isoformat() in tip for tip in timeline_tips
    ), timeline_tips
    assert japanese_lang == "ja"
    assert english_titles == ["Overdue"]
    assert japanese_titles == ["期限超過"]
    assert logout == "ログアウト"
    assert log_rows > 0
    assert moved_participants, "the preview lists each participant who moves"
    assert ScheduledVisit.objects.filter(visit_definition__code="W28").count() == 0  # previewed
