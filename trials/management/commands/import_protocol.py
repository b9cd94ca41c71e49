from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trials.protocol_file import MAX_FILE_BYTES, ProtocolFileError
from trials.services import ProtocolImportError, protocol_import


class Command(BaseCommand):
    help = "Validate a protocol YAML file and import it as a new protocol version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path)

    def handle(self, *args: Any, files: list[Path], **options: Any) -> None:
        failed = False
        for path in files:
            try:
                with path.open("rb") as file:
                    # One byte more than a protocol file may have: enough to refuse it.
                    data = file.read(MAX_FILE_BYTES + 1)
                version = protocol_import(text=data, source=str(path))
            except OSError as exc:
                self.stderr.write(f"{path}: cannot read: {exc.strerror}")
                failed = True
            except (ProtocolFileError, ProtocolImportError) as exc:
                self.stderr.write(str(exc))
                failed = True
            else:
                self.stdout.write(f"{path}: imported {version} ({version.status})")
        if failed:
            raise CommandError("some files were not imported; nothing of them was stored")
