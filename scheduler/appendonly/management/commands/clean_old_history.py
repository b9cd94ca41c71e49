from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

REFUSAL = (
    "{command} is disabled: the audit trail is append-only (21 CFR 11.10(e), ICH E6(R3)), "
    "so history rows are never deleted. Keep the trail as long as the trial's records must "
    "be kept; archive database backups instead."
)


class Command(BaseCommand):
    """Replaces django-simple-history's command of the same name, which deletes history
    (this app comes before `simple_history` in INSTALLED_APPS, so this one is found)."""

    help = "Disabled: the audit trail is append-only."
    package_command = "clean_old_history"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("models", nargs="*")

    def run_from_argv(self, argv: list[str]) -> None:
        # Whatever the arguments (the package's --days, --auto, --dry…), the same refusal
        # and exit status, before any parsing could fail differently.
        sys.stderr.write(self.refusal() + "\n")
        sys.exit(1)

    def handle(self, *args: Any, **options: Any) -> None:
        raise CommandError(self.refusal())

    def refusal(self) -> str:
        return REFUSAL.format(command=self.package_command)
