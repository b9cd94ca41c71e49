"""Migration scheduler 0015: site feeds issued before it show their issuer's trials (as the
memberships were then), and one whose issuer is gone shows nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("scheduler", "0014_history_newest_by_participant")]
AFTER = [("scheduler", "0015_site_feed_trials")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_site_feeds_issued_before_show_their_issuers_trials_and_an_orphan_none() -> None:
    apps = _migrate(BEFORE)
    Site = apps.get_model("trials", "Site")
    Trial = apps.get_model("trials", "Trial")
    TrialSite = apps.get_model("trials", "TrialSite")
    Membership = apps.get_model("scheduler", "Membership")
    CalendarFeed = apps.get_model("scheduler", "CalendarFeed")
    User = apps.get_model("auth", "User")
    try:
        berlin = Site.objects.create(code="berlin", name="Berlin", timezone="Europe/Berlin")
        mine, theirs, elsewhere = (
            Trial.objects.create(code=code, title=code, phase="3", sponsor="S", blinding="open")
            for code in ("mine", "theirs", "elsewhere")
        )
        for trial in (mine, theirs):
            TrialSite.objects.create(trial=trial, site=berlin)
        coordinator = User.objects.create(username="c")
        Membership.objects.create(user=coordinator, trial=mine, site=berlin, role="coordinator")
        # A role that reads only, and a trial not at Berlin: neither is shown.
        Membership.objects.create(
            user=coordinator, trial=theirs, site=berlin, role="unblinded_pharmacist"
        )
        Membership.objects.create(user=coordinator, trial=elsewhere, site=None, role="data_manager")
        issued = CalendarFeed.objects.create(
            site=berlin, token_sha256="a" * 64, created_by=coordinator
        )
        orphan = CalendarFeed.objects.create(site=berlin, token_sha256="b" * 64, created_by=None)

        apps = _migrate(AFTER)
        CalendarFeed = apps.get_model("scheduler", "CalendarFeed")
        shown = {
            feed.pk: sorted(feed.trials.values_list("code", flat=True))
            for feed in CalendarFeed.objects.filter(pk__in=[issued.pk, orphan.pk])
        }
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    assert shown == {issued.pk: ["mine"], orphan.pk: []}
