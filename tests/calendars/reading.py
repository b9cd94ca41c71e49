"""Four independent iCalendar readers, each reduced to what a calendar app shows: for every
event, its start and end.

- icalendar: the library we build with;
- vobject: the parser behind Radicale and several CalDAV tools;
- ics: a third Python parser, which resolves TZIDs from its own zone database;
- ical.js: the parser inside Thunderbird, run with node (`readers/read.mjs`), one process for
  every calendar of a run.

A timed value is read as its UTC instant, an all-day value as its date. A value a reader cannot
place on the time line (floating time, an unknown TZID) is read as a string saying so, so it
never equals an expected instant; a calendar a reader refuses is read as `Unreadable`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import ics
import pytest
import vobject
from icalendar import Calendar

from tests.conftest import IN_CI

READERS_DIR = Path(__file__).resolve().parent / "readers"

Moment = dt.datetime | dt.date | str
# uid -> (start, end), for one calendar
Reading = dict[str, tuple[Moment, Moment]]


@dataclass(frozen=True)
class Unreadable:
    """A calendar the reader refused, with its error."""

    error: str


def _moment(value: dt.datetime | dt.date) -> Moment:
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            return f"floating {value.isoformat()}"
        return value.astimezone(dt.UTC)
    return value


def read_with_icalendar(text: str) -> Reading:
    return {
        str(event["UID"]): (_moment(event.start), _moment(event.end))
        for event in Calendar.from_ical(text).events
    }


def read_with_vobject(text: str) -> Reading:
    reading: Reading = {}
    for event in vobject.readOne(text).contents.get("vevent", []):
        start = event.dtstart.value
        end = event.dtend.value if "dtend" in event.contents else start + event.duration.value
        reading[event.uid.value] = (_moment(start), _moment(end))
    return reading


def read_with_ics(text: str) -> Reading:
    reading: Reading = {}
    for event in ics.Calendar(text).events:
        if event.all_day:
            reading[event.uid] = (event.begin.date(), event.end.date())
        else:
            reading[event.uid] = (_moment(event.begin.datetime), _moment(event.end.datetime))
    return reading


PYTHON_READERS: dict[str, Callable[[str], Reading]] = {
    "icalendar": read_with_icalendar,
    "vobject": read_with_vobject,
    "ics": read_with_ics,
}
READERS = (*PYTHON_READERS, "ical.js")


def node_reader_missing() -> str | None:
    if shutil.which("node") is None:
        return "the ical.js reader needs node on PATH"
    if not (READERS_DIR / "node_modules" / "ical.js" / "package.json").is_file():
        return (
            "ical.js is not installed: `make test` installs it, or run "
            "`npm ci --prefix tests/calendars/readers --no-audit --no-fund`"
        )
    return None


def require_node_reader() -> None:
    # Like browser tests (tests/conftest.py): locally a missing node skips with the reason; in
    # CI it fails, so the one reader that caught the VTIMEZONE bug can never silently stop.
    missing = node_reader_missing()
    if missing is None:
        return
    if IN_CI:
        pytest.fail(f"{missing} (CI=true: this test must run, not skip)")
    pytest.skip(missing)


def _icaljs_moment(value: str | dict[str, str]) -> Moment:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if "date" in value:
        return dt.date.fromisoformat(value["date"])
    return f"floating {value['floating']}"


def read_with_icaljs(
    calendars: Mapping[str, bytes], workdir: Path
) -> dict[str, Reading | Unreadable]:
    """Every calendar read by ical.js in one node process: calendar name -> its reading."""
    require_node_reader()
    workdir.mkdir(parents=True, exist_ok=True)
    files = {}
    for number, (name, content) in enumerate(calendars.items()):
        file = f"{number:05d}.ics"
        (workdir / file).write_bytes(content)
        files[file] = name
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(  # noqa: S603 - our own script on our own files
        [node, str(READERS_DIR / "read.mjs"), str(workdir)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {
        files[file]: (
            Unreadable(events["error"])
            if isinstance(events, dict)
            else {
                event["uid"]: (_icaljs_moment(event["start"]), _icaljs_moment(event["end"]))
                for event in events
            }
        )
        for file, events in json.loads(result.stdout).items()
    }


def _read_or_refuse(read: Callable[[str], Reading], text: str) -> Reading | Unreadable:
    try:
        return read(text)
    except Exception as error:  # any refusal is a finding about that calendar
        return Unreadable(f"{type(error).__name__}: {error}")


def read_everywhere(
    calendars: Mapping[str, bytes], workdir: Path
) -> dict[str, dict[str, Reading | Unreadable]]:
    """reader -> calendar name -> uid -> (start, end), for all four readers."""
    readings = {"ical.js": read_with_icaljs(calendars, workdir)}
    for reader, read in PYTHON_READERS.items():
        readings[reader] = {
            name: _read_or_refuse(read, content.decode()) for name, content in calendars.items()
        }
    return {reader: readings[reader] for reader in READERS}
