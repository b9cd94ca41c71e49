"""Coordinator messages reach someone: a site in use without a mailbox is reported by
`manage.py check` and on its admin page; the demo sites have mailboxes."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from django.core import checks
from django.core.management import call_command
from django.urls import reverse

from tests.factories import SiteFactory, participant_for
from trials.models import Site, TrialSite

pytestmark = pytest.mark.django_db


def no_mailbox(code: str) -> str:
    return (
        f"Site {code} has no mailbox: its coordinators' reminders cannot be emailed and arrive "
        "only as in-app notices, and replies to its invites go nowhere."
    )


def mailbox_warnings() -> list[tuple[str, str, object, str | None]]:
    return [
        (message.id, message.msg, message.obj, message.hint)
        for message in checks.run_checks()
        if message.id == "scheduler.W001"
    ]


def test_check_reports_each_site_in_use_without_a_mailbox(import_seed) -> None:
    niams = import_seed("000")
    running_trial = SiteFactory.create(code="nih-cc", email="")
    with_participant_only = SiteFactory.create(code="berlin", email="")
    participant_for(niams, anchors={"day1": dt.date(2026, 2, 2)}, site=with_participant_only)
    TrialSite.objects.filter(site=with_participant_only).delete()
    TrialSite.objects.create(trial=niams.trial, site=running_trial)
    has_mailbox = SiteFactory.create(code="tsukuba", email="coordinators@example.org")
    TrialSite.objects.create(trial=niams.trial, site=has_mailbox)
    SiteFactory.create(code="unused", email="")

    assert mailbox_warnings() == [
        (
            "scheduler.W001",
            no_mailbox("berlin"),
            with_participant_only,
            "Give the site an email address: Admin › Sites › berlin › Email.",
        ),
        (
            "scheduler.W001",
            no_mailbox("nih-cc"),
            running_trial,
            "Give the site an email address: Admin › Sites › nih-cc › Email.",
        ),
    ]


def test_manage_py_check_prints_the_warning(import_seed) -> None:
    niams = import_seed("000")
    site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center", email="")
    TrialSite.objects.create(trial=niams.trial, site=site)
    output = io.StringIO()

    call_command("check", stdout=output, stderr=output)

    assert [line for line in output.getvalue().splitlines() if "scheduler.W001" in line] == [
        f"NIH Clinical Center: (scheduler.W001) {no_mailbox('nih-cc')}"
    ]


def test_site_page_warns_while_the_site_has_no_mailbox(admin_client, import_seed) -> None:
    niams = import_seed("000")
    site = SiteFactory.create(code="nih-cc", email="")
    TrialSite.objects.create(trial=niams.trial, site=site)
    url = reverse("admin:trials_site_change", args=[site.pk])

    before = admin_client.get(url)
    Site.objects.filter(pk=site.pk).update(email="coordinators+nih-cc@example.org")
    after = admin_client.get(url)

    assert before.context["page_warnings"] == [no_mailbox("nih-cc")]
    assert re.findall(
        r'<ul class="messagelist" id="page-warnings"><li class="warning">([^<]*)</li>',
        before.content.decode(),
    ) == [no_mailbox("nih-cc").replace("'", "&#x27;")]
    assert after.context["page_warnings"] == []
    assert 'id="page-warnings"' not in after.content.decode()


def test_demo_sites_get_mailboxes_and_check_is_quiet() -> None:
    # A demo database from before sites had mailboxes gets them on the next load.
    SiteFactory.create(code="nih-cc", name="NIH Clinical Center", email="")

    call_command("load_demo", "--no-admin", stdout=io.StringIO())

    assert dict(Site.objects.values_list("code", "email")) == {
        "berlin": "coordinators+berlin@example.org",
        "nih-cc": "coordinators+nih-cc@example.org",
        "tsukuba": "coordinators+tsukuba@example.org",
    }
    assert mailbox_warnings() == []
