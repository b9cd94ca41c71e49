from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trials.models import ProtocolVersion
from trials.services import protocol_export


class Command(BaseCommand):
    help = "Print a stored protocol version as protocol YAML (re-importable as it is)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("trial", help="trial code, e.g. niams-ani-vascular")
        parser.add_argument("version", help="version label, e.g. 1.0")

    def handle(self, *args: Any, trial: str, version: str, **options: Any) -> None:
        found = ProtocolVersion.objects.filter(trial__code=trial, label=version).first()
        if found is None:
            labels = list(
                ProtocolVersion.objects.filter(trial__code=trial).values_list("label", flat=True)
            )
            hint = f"; its versions are {', '.join(labels)}" if labels else "; no such trial"
            raise CommandError(f"no version {version!r} of trial {trial!r}{hint}")
        self.stdout.write(protocol_export(version=found), ending="")
