"""A coordinator adds a participant in a real browser: register, see why they are not eligible,
fix the birth date, check again, enroll, land on the new calendar."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model

from participants.models import Participant
from scheduler.access import site_today
from tests.browser.test_admin import chromium_page, log_in
from tests.factories import SiteFactory, member, member_everywhere
from trials.models import TrialSite


def years_before(day: dt.date, years: int) -> dt.date:
    return day.replace(year=day.year - years, day=min(day.day, 28))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_coordinator_adds_a_niams_participant_fixes_the_birth_date_and_enrolls(
    live_server, import_seed
) -> None:
    # All ORM work happens here, before Playwright's greenlet (which gets its own connection).
    get_user_model().objects.create_superuser("coordinator", "c@example.org", "a-long-passphrase")
    version = import_seed("000")
    site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center", email="c@example.org")
    trial_site = TrialSite.objects.create(trial=version.trial, site=site)
    today = site_today(site)
    consent = today - dt.timedelta(days=7)
    day1 = today + dt.timedelta(days=14)
    # 17 on the consent date (a typo for 30 years old, found by the eligibility check).
    typo_birth_date = years_before(consent, 17) - dt.timedelta(days=30)
    birth_date = years_before(consent, 30) - dt.timedelta(days=30)

    # The admin shows clinical data through memberships: a coordinator at every site.
    member_everywhere(get_user_model().objects.get(username="coordinator"))
    # …and the site's investigator, who signs eligibility off in the screening log.
    member(
        get_user_model().objects.get(username="coordinator"),
        trial=version.trial,
        site=site,
        role="investigator",
    )
    with chromium_page() as page:
        log_in(page, live_server.url, "coordinator", "a-long-passphrase")
        page.goto(f"{live_server.url}/admin/participants/participant/")
        page.click(".object-tools a.addlink")
        page.wait_for_load_state("load")
        page.select_option("#id_trial_site", str(trial_site.pk))
        page.click("#trial-site-form input[type=submit]")
        page.wait_for_load_state("load")
        page.fill("#id_study_id", "NIH-CC-004")
        page.fill("#id_birth_date", typo_birth_date.isoformat())
        page.fill("#id_weight_kg", "61.5")
        page.fill("#id_email", "pat@example.org")
        page.fill("#id_phone", "+1 301 555 0100")
        page.fill("#id_anchor_day1", day1.isoformat())
        page.fill("#id_anchor_consent", consent.isoformat())
        page.click("input[name=_register]")
        page.wait_for_load_state("load")
        registered_message = page.locator("ul.messagelist li").all_inner_texts()
        problems = page.locator("#enroll-problems li").all_inner_texts()
        enroll_buttons_before = page.locator("input[name=_enroll]").count()
        page.fill("#id_birth_date", birth_date.isoformat())
        page.click("input[name=_recheck]")
        page.wait_for_load_state("load")
        problems_after_fix = page.locator("#enroll-problems li").all_inner_texts()
        eligible = page.locator("#enroll-ok").inner_text()
        page.click("input[name=_confirm_eligibility]")
        page.wait_for_load_state("load")
        sign_off = page.locator("#eligibility-sign-off").inner_text()
        page.click("input[name=_enroll]")
        page.wait_for_load_state("load")
        landed_url = page.url
        enrolled_message = page.locator("ul.messagelist li").all_inner_texts()
        visit_codes = page.locator("#visits-group td.field-visit_definition").all_inner_texts()

    participant = Participant.objects.get()
    assert registered_message == [
        "NIH-CC-004 registered in screening on niams-ani-vascular v1.0: check eligibility, "
        "then enroll."
    ]
    assert problems == [
        "AGE (Aged 18 to 80 years.): age 17 years is outside the required range (≥ 18 and ≤ 80)"
    ]
    assert enroll_buttons_before == 0
    assert sign_off.startswith("Eligibility confirmed by the investigator coordinator on ")
    assert problems_after_fix == []
    assert eligible == (
        "Every machine-checkable criterion is met and the calendar can be planned. The other "
        "criteria of the protocol are for the investigator to confirm."
    )
    assert landed_url == (
        f"{live_server.url}/admin/participants/participant/{participant.pk}/change/"
    )
    assert enrolled_message == [
        f"Enrolled niams-ani-vascular/NIH-CC-004 on {today.isoformat()}: 12 visit(s) planned."
    ]
    assert [code.split(" ")[0] for code in visit_codes] == [
        "V1",
        "V2",
        "V3",
        "V3C",
        "V4",
        "V5",
        "V6",
        "V7",
        "V8",
        "V9",
        "V10",
        "V11",
    ]
    assert (participant.status, participant.birth_date, participant.protocol_version.label) == (
        "enrolled",
        birth_date,
        "1.0",
    )
