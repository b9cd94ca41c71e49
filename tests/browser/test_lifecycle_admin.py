"""A coordinator reschedules a visit in a real browser: form, preview, confirm."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth import get_user_model

from scheduler.models import ScheduledVisit
from scheduler.services import participant_enroll, visit_book
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import SiteFactory, member_everywhere, participant_for

D = dt.date
# A week before V3's window (2026-02-27 to 2026-03-05), so booking 2 March, then 9 March, is
# not in the past at the site. The clock ticks on from there (the live server answers the
# browser in real time), in the live server's thread as in the test's.
BEFORE_V3 = dt.datetime(2026, 2, 20, 15, 0, tzinfo=dt.UTC)
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "reschedule-preview.png"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@time_machine.travel(BEFORE_V3, tick=True)
def test_coordinator_reschedules_v3_out_of_window_after_seeing_the_preview(
    live_server, import_seed, tmp_path
) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    coordinator = get_user_model().objects.create_superuser(
        "coordinator", "c@example.org", "a-long-passphrase"
    )
    participant = participant_for(
        import_seed("000"),
        anchors={"day1": D(2026, 2, 2)},
        site=SiteFactory.create(code="nih-cc", name="NIH Clinical Center"),
        study_id="NIH-CC-001",
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    v3 = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V3")
    visit_book(visit=v3, local_date=D(2026, 3, 2), local_time=dt.time(9, 0), by=coordinator)
    participant_url = f"{live_server.url}/admin/participants/participant/{participant.pk}/change/"

    # The admin shows clinical data through memberships: a coordinator at every site.
    member_everywhere(get_user_model().objects.get(username="coordinator"))
    with chromium_page() as page:
        log_in(page, live_server.url, "coordinator", "a-long-passphrase")
        page.goto(participant_url)
        page.locator("#visits-group tr", has_text="Treatment visit 2 (week 4)").locator(
            # "View": a visit changes only through its actions, never by editing it.
            "a.inlineviewlink"
        ).click()
        page.wait_for_load_state("load")
        page.click("text=Book / reschedule")
        page.wait_for_load_state("load")
        page.fill("#id_local_date", "2026-03-09")
        page.fill("#id_local_time", "10:30")
        page.fill("#id_reason", "participant in hospital with a fracture")
        page.click("input[name=_preview]")
        page.wait_for_load_state("load")
        outcome = [
            row.locator("td").inner_text() for row in page.locator("#lifecycle-outcome tr").all()
        ]
        highlighted = page.locator("#lifecycle-outcome tr.deviation th").all_inner_texts()
        visit_changes = [
            row.locator("td").all_inner_texts()
            for row in page.locator("#visit-changes tbody tr").all()
        ]
        # The README's picture is refreshed only on request, so a test run leaves git clean.
        screenshot = (
            DOCS_SCREENSHOT
            if os.environ.get("UPDATE_SCREENSHOTS")
            else (tmp_path / "reschedule-preview.png")
        )
        page.screenshot(path=str(screenshot), full_page=True)
        page.click("input[name=_confirm]")
        page.wait_for_load_state("load")
        confirmed_url = page.url
        message = page.locator("ul.messagelist li").all_inner_texts()
        status = page.locator("div.field-glance_status div.readonly").inner_text()
        booked_at = page.locator("div.field-booked_at div.readonly").inner_text()
        booked_date = page.locator("div.field-booked_date div.readonly").inner_text()
        deviation = page.locator("div.field-deviation_days div.readonly").inner_text()

    assert outcome == [
        "Mon 9 Mar 2026 10:30 EDT",
        "Mon 9 Mar 2026 14:30 UTC",
        "4 day(s) after the window (2026-02-27 to 2026-03-05): a protocol deviation",
        "participant in hospital with a fracture",
    ]
    assert highlighted == ["Deviation"]
    assert visit_changes == [
        [
            "V3C",
            "1",
            "moved",
            "2026-03-09",
            "2026-03-07 to 2026-03-11",
            "2026-03-16",
            "2026-03-14 to 2026-03-18",
            "—",
            "no",
        ]
    ]
    assert confirmed_url == f"{live_server.url}/admin/scheduler/scheduledvisit/{v3.pk}/change/"
    assert message == [
        "V3 booked for Mon 9 Mar 2026 10:30 EDT; re-planned: V3C moved (2026-03-09 → 2026-03-16)."
    ]
    # The status at a glance names the deviation (a booking outside its window), and the
    # booking reads on the site's clock.
    assert (status, booked_at, booked_date, deviation) == (
        "out of window",
        "Mon 9 Mar 2026 10:30 EDT",
        "March 9, 2026",
        "4",
    )
    v3.refresh_from_db()
    assert (v3.status, v3.booked_start, v3.deviation_days, v3.version) == (
        "booked",
        dt.datetime(2026, 3, 9, 14, 30, tzinfo=dt.UTC),
        4,
        3,
    )
