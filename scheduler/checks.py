"""System checks (`manage.py check`) for configuration that lives in the database.

scheduler.W001: a site that runs a trial (or has participants) but has no mailbox. Invites are
then sent from DEFAULT_FROM_EMAIL with nowhere for replies to go, and the coordinators' email
reminders cannot be delivered: they fall back to in-app notices, which someone has to read.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import DatabaseError
from django.db.models import Q, QuerySet

from trials.models import Site

MAILBOX_HINT = "Give the site an email address: Admin › Sites › {code} › Email."


def sites_without_mailbox() -> QuerySet[Site]:
    """Sites in use (running a trial or with participants) that have no mailbox."""
    return (
        Site.objects.filter(email="")
        .filter(Q(participants__isnull=False) | Q(trials__isnull=False))
        .distinct()
        .order_by("code")
    )


def site_mailbox_warning(site: Site) -> str | None:
    """What `check` and the site's admin page say while a site in use has no mailbox."""
    if site.email or not sites_without_mailbox().filter(pk=site.pk).exists():
        return None
    return _no_mailbox(site)


def _no_mailbox(site: Site) -> str:
    return (
        f"Site {site.code} has no mailbox: its coordinators' reminders cannot be emailed and "
        "arrive only as in-app notices, and replies to its invites go nowhere."
    )


@checks.register("scheduler")
def check_site_mailboxes(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    try:
        sites = list(sites_without_mailbox())
    except DatabaseError:
        # Not migrated yet: `migrate` runs the checks before it creates the tables.
        return []
    return [
        checks.Warning(
            _no_mailbox(site),
            hint=MAILBOX_HINT.format(code=site.code),
            obj=site,
            id="scheduler.W001",
        )
        for site in sites
    ]
