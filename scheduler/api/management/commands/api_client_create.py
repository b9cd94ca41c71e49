from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler.api.credentials import site_system_credentials_create
from trials.models import Site, Trial


class Command(BaseCommand):
    help = "Issue OAuth2 client credentials to a site system bound to sites of one trial."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A name for the site system, e.g. berlin-ehr")
        parser.add_argument("--trial", required=True, help="Trial code")
        parser.add_argument("--site", action="append", required=True, help="Site code (repeat)")

    def handle(self, *args: Any, name: str, trial: str, site: list[str], **options: Any) -> None:
        the_trial = Trial.objects.filter(code=trial).first()
        if the_trial is None:
            raise CommandError(f"no trial {trial!r}")
        sites = list(Site.objects.filter(code__in=site, trialsite__trial=the_trial))
        missing = sorted(set(site) - {s.code for s in sites})
        if missing:
            raise CommandError(f"{', '.join(missing)} do(es) not run {trial}")
        application, secret = site_system_credentials_create(
            name=name, trial=the_trial, sites=sites
        )
        self.stdout.write(f"client_id:     {application.client_id}")
        self.stdout.write(f"client_secret: {secret}")
        self.stdout.write("The secret is shown only now; only its hash is stored.")
