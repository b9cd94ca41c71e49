"""One calendar, one reading: every kind of calendar the product writes (participant feed, site
feed, iMIP REQUEST and CANCEL) gives the same start and end instants in icalendar, vobject, ics
and ical.js, and they are the instants the database holds, for sites in zones chosen to be hard,
over five years of clock changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from participants.models import Participant
from scheduler.calendars.events import milestone_uid, visit_uid
from scheduler.calendars.feeds import participant_feed_ical, site_feed_ical
from scheduler.calendars.ical import Method
from scheduler.calendars.imip import invite_message
from scheduler.models import ScheduledMilestone, ScheduledVisit
from scheduler.services import participant_enroll, visit_add_unscheduled, visit_book, visit_cancel
from tests.calendars.conftest import visit_at
from tests.calendars.reading import (
    READERS,
    Moment,
    Reading,
    Unreadable,
    read_everywhere,
    require_node_reader,
)
from tests.factories import SiteFactory, participant_for, site_trials
from trials.models import Arm, ProtocolVersion, Site

pytestmark = pytest.mark.django_db

HARD_ZONES = (
    "America/New_York",  # the zone of the reported bug
    "Asia/Kathmandu",  # +05:45
    "Asia/Kolkata",  # +05:30
    "America/St_Johns",  # -03:30, daylight -02:30
    "Pacific/Chatham",  # +12:45, daylight +13:45
    "Australia/Lord_Howe",  # a 30-minute daylight shift
    "Antarctica/Troll",  # a 2-hour daylight shift
    "America/Santiago",  # southern hemisphere; changes at midnight
    "Australia/Adelaide",  # southern hemisphere, +09:30 / +10:30
    "America/Sao_Paulo",  # daylight time abolished in 2019
    "Asia/Tehran",  # daylight time abolished in 2022
    "Africa/Casablanca",  # +01 since 2018, back to +00 for each Ramadan
    "America/Mexico_City",  # daylight time abolished in 2022
    "Europe/Dublin",  # negative daylight time in tzdata (winter is "daylight")
)
# Five years of clock changes: Sao Paulo's last (2019), Tehran's and Mexico City's last (2022),
# and the years visits are being booked into now.
YEARS = (2019, 2022, 2026, 2027, 2028)
# Everything is booked ahead of the clock, as it would have been.
BOOKING_CLOCK = dt.datetime(2018, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY1 = dt.date(2018, 7, 2)
# scheduler/calendars/events.py: a visit without a protocol definition (unscheduled) is an hour.
UNSCHEDULED_MINUTES = 60
# NIAMS infusion visits, 4 hours each, with no visit counted from them.
FOUR_HOUR_VISITS = ("V2", "V5", "V8")
PER_PARTICIPANT = 25
INVITE_EVERY = 3


@dataclass(frozen=True)
class ClockChange:
    at: dt.datetime  # the first UTC instant with the new offset
    before: dt.timedelta
    after: dt.timedelta

    def wall_before(self) -> dt.datetime:
        """The local wall clock at the change, read with the old offset (naive)."""
        return (self.at + self.before).replace(tzinfo=None)

    def wall_after(self) -> dt.datetime:
        return (self.at + self.after).replace(tzinfo=None)


def clock_changes(zone: str, first: dt.date, last: dt.date) -> list[ClockChange]:
    """Every change of the zone's UTC offset between two dates, to the minute, from zoneinfo."""
    tz = ZoneInfo(zone)
    step = dt.timedelta(hours=6)  # no zone changes twice within 6 hours
    moment = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(last, dt.time(), tzinfo=dt.UTC)
    changes = []
    while moment < end:
        before, after = (
            moment.astimezone(tz).utcoffset(),
            (moment + step).astimezone(tz).utcoffset(),
        )
        if before != after:
            assert before is not None and after is not None
            low, high = moment, moment + step
            while high - low > dt.timedelta(minutes=1):
                middle = (low + (high - low) / 2).replace(second=0, microsecond=0)
                if middle.astimezone(tz).utcoffset() == before:
                    low = middle
                else:
                    high = middle
            changes.append(ClockChange(high, before, after))
        moment += step
    return changes


def wall_times_around(change: ClockChange) -> list[tuple[dt.date, dt.time]]:
    """Local dates and times to book around one clock change: 30 minutes before it (an hour's
    visit straddles it), a time that does not exist (clocks forward) or happens twice (clocks
    back), and 30 minutes after it on the new wall clock."""
    shift = change.after - change.before
    before, after = change.wall_before(), change.wall_after()
    odd = before + shift / 2 if shift > dt.timedelta(0) else after - shift / 2
    return [
        (moment.date(), moment.time())
        for moment in (before - dt.timedelta(minutes=30), odd, after + dt.timedelta(minutes=30))
    ]


def yearly_wall_times() -> list[tuple[dt.date, dt.time]]:
    """One booking a year in every zone, changes or not: a winter morning in even years, a
    summer night late enough to be on another UTC date in odd ones."""
    return [
        (dt.date(year, 1, 15), dt.time(9, 0))
        if year % 2 == 0
        else (dt.date(year, 7, 15), dt.time(23, 45))
        for year in YEARS
    ]


def enrolled_at(version: ProtocolVersion, site: Site, study_id: str, day1: dt.date) -> Participant:
    participant = participant_for(
        version,
        anchors={"day1": day1},
        site=site,
        study_id=study_id,
        email=f"{study_id.lower()}@example.org",
    )
    participant_enroll(
        participant=participant,
        on=day1 - dt.timedelta(days=28),
        arm=Arm.objects.get(version=version, code="ANI"),
    )
    return participant


def site_in(zone: str) -> Site:
    slug = zone.lower().replace("/", "-").replace("_", "-")
    return SiteFactory.create(
        code=slug, name=f"Clinic {zone}", timezone=zone, email=f"visits@{slug}.example"
    )


Expected = dict[str, tuple[Moment, Moment]]


def expected_now() -> Expected:
    """uid -> (start, end) from what is stored: a booking's UTC instant and that plus its
    duration in real elapsed minutes; otherwise the all-day window or milestone day."""
    expected: Expected = {}
    for visit in ScheduledVisit.objects.select_related("visit_definition"):
        if visit.booked_start is not None:
            minutes = (
                visit.visit_definition.duration_minutes
                if visit.visit_definition
                else UNSCHEDULED_MINUTES
            )
            start = visit.booked_start.astimezone(dt.UTC)
            expected[visit_uid(visit)] = (start, start + dt.timedelta(minutes=minutes))
        else:
            expected[visit_uid(visit)] = (
                visit.window_start,
                visit.window_end + dt.timedelta(days=1),
            )
    for milestone in ScheduledMilestone.objects.all():
        expected[milestone_uid(milestone)] = (
            milestone.due_date,
            milestone.due_date + dt.timedelta(days=1),
        )
    return expected


@dataclass(frozen=True)
class Written:
    zone: str
    content: bytes
    expected: Expected  # the database's word at the moment the calendar was written


def shown(moment: Moment | None, zone: str) -> str:
    if isinstance(moment, dt.datetime):
        local = moment.astimezone(ZoneInfo(zone))
        return f"{moment:%Y-%m-%dT%H:%MZ} ({local:%Y-%m-%d %H:%M %Z})"
    return "missing" if moment is None else str(moment)


def disagreements_in(
    written: dict[str, Written], readings: dict[str, dict[str, Reading | Unreadable]]
) -> tuple[int, list[str]]:
    """How many events the calendars hold, and one line per reader and event whose start or end
    is not the database's (or per reader and calendar it could not read)."""
    events = 0
    found = []
    for name, calendar in written.items():
        read = {reader: readings[reader][name] for reader in READERS}
        found += [
            f"{reader} {calendar.zone} {name}: could not read it: {reading.error}"
            for reader, reading in read.items()
            if isinstance(reading, Unreadable)
        ]
        readable = {r: reading for r, reading in read.items() if isinstance(reading, dict)}
        uids = sorted({uid for reading in readable.values() for uid in reading})
        events += len(uids)
        for uid in uids:
            want = calendar.expected.get(uid)
            for reader, reading in readable.items():
                got = reading.get(uid)
                if got is None or want is None or got != want:
                    found.append(
                        f"{reader} {calendar.zone} {name} {uid}: expected "
                        f"{' to '.join(shown(m, calendar.zone) for m in want or (None, None))}, "
                        f"got {' to '.join(shown(m, calendar.zone) for m in got or (None, None))}"
                    )
    return events, found


def invite_content(visit: ScheduledVisit, method: Method) -> bytes:
    """The text/calendar part of the visit's invite as sent, not as icalendar re-writes it."""
    visit = ScheduledVisit.objects.select_related("participant__site", "visit_definition").get(
        pk=visit.pk
    )
    message = invite_message(visit, method=method)
    assert message is not None
    [content] = [c for c, mimetype in message.alternatives if mimetype.startswith("text/calendar")]
    if isinstance(content, str):
        return content.encode()
    assert isinstance(content, bytes)
    return content


@pytest.fixture(autouse=True)
def node_reader() -> None:
    """Skip (or, in CI, fail) before building anything when ical.js cannot run."""
    require_node_reader()


@pytest.fixture
def booking_clock() -> Iterator[None]:
    with time_machine.travel(BOOKING_CLOCK, tick=False):
        yield


def test_every_calendar_reads_the_same_instants_in_four_readers_in_hard_zones(
    import_seed, coordinator, booking_clock, tmp_path: Path, capsys
) -> None:
    version = import_seed("000")
    participants: dict[str, list[Participant]] = {}
    invited: list[ScheduledVisit] = []  # a REQUEST each
    cancelled: list[ScheduledVisit] = []  # a REQUEST, then cancelled and a CANCEL
    for zone in HARD_ZONES:
        site = site_in(zone)
        changes = [
            change
            for year in YEARS
            for change in clock_changes(zone, dt.date(year, 1, 1), dt.date(year + 1, 1, 1))
        ]
        wall_times = [moment for change in changes for moment in wall_times_around(change)]
        wall_times += yearly_wall_times()
        # A participant's reminders are re-planned on every change to their calendar, so the
        # bookings are spread over several participants to keep the test fast.
        for group in range(0, len(wall_times), PER_PARTICIPANT):
            number = group // PER_PARTICIPANT
            participant = enrolled_at(version, site, f"{site.code}-{number}", DAY1)
            participants.setdefault(zone, []).append(participant)
            straddled = changes[number * len(FOUR_HOUR_VISITS) :]
            for position, code in enumerate(FOUR_HOUR_VISITS):
                visit = visit_at(participant, code)
                if position < len(straddled):
                    # Two hours before the change on the old wall clock, so it ends two
                    # elapsed hours after it.
                    start = straddled[position].wall_before() - dt.timedelta(hours=2)
                    day, at = start.date(), start.time()
                else:
                    day, at = visit.target_date, dt.time(9, 0)
                visit_book(
                    visit=visit, local_date=day, local_time=at, by=coordinator, reason="zones"
                )
            for day, at in wall_times[group : group + PER_PARTICIPANT]:
                visit_add_unscheduled(
                    participant=participant,
                    local_date=day,
                    local_time=at,
                    reason="clock-change check",
                    by=coordinator,
                )
            visits = list(
                ScheduledVisit.objects.filter(participant=participant).order_by("target_date")
            )
            invited += visits[::INVITE_EVERY]
            if number == 0:
                booked = [visit for visit in visits if visit.booked_start is not None]
                cancelled += [booked[0], booked[-1]]

    written: dict[str, Written] = {}
    stamp = timezone.now()
    expected = expected_now()
    for zone, zone_participants in participants.items():
        for participant in zone_participants:
            written[f"participant feed {participant.study_id}"] = Written(
                zone, participant_feed_ical(participant, stamp=stamp), expected
            )
        written[f"site feed {zone}"] = Written(
            zone,
            site_feed_ical(
                zone_participants[0].site,
                trials=site_trials(zone_participants[0].site),
                stamp=stamp,
            ),
            expected,
        )
    for visit in [*invited, *cancelled]:
        written[f"REQUEST {visit_uid(visit)}"] = Written(
            visit.participant.site.timezone, invite_content(visit, "REQUEST"), expected
        )
    for visit in cancelled:
        visit_cancel(visit=visit, by=coordinator, reason="cancel check")
    expected = expected_now()
    for visit in cancelled:
        written[f"CANCEL {visit_uid(visit)}"] = Written(
            visit.participant.site.timezone, invite_content(visit, "CANCEL"), expected
        )

    readings = read_everywhere(
        {name: calendar.content for name, calendar in written.items()}, tmp_path / "calendars"
    )
    events, disagreements = disagreements_in(written, readings)

    summary = f"{len(written)} calendars, {events} events, {len(disagreements)} disagreements"
    with capsys.disabled():
        print(f"\n{summary}")
    assert disagreements == [], summary + "\n" + "\n".join(disagreements)


@pytest.mark.parametrize(
    ("zone", "night", "start", "end"),
    [
        # 01:00 EST; the clocks skip 02:00-03:00; 4 hours later is 06:00 EDT.
        (
            "America/New_York",
            dt.date(2027, 3, 14),
            dt.datetime(2027, 3, 14, 6, 0, tzinfo=dt.UTC),
            dt.datetime(2027, 3, 14, 10, 0, tzinfo=dt.UTC),
        ),
        # 01:00 +10:30; the clocks skip 02:00-02:30; 4 hours later is 05:30 +11:00.
        (
            "Australia/Lord_Howe",
            dt.date(2026, 10, 4),
            dt.datetime(2026, 10, 3, 14, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 10, 3, 18, 30, tzinfo=dt.UTC),
        ),
        # 01:00 +09:30; the clocks skip 02:00-03:00; 4 hours later is 06:00 +10:30.
        (
            "Australia/Adelaide",
            dt.date(2026, 10, 4),
            dt.datetime(2026, 10, 3, 15, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 10, 3, 19, 30, tzinfo=dt.UTC),
        ),
    ],
)
def test_four_hour_visit_at_1am_on_spring_forward_night_ends_four_elapsed_hours_later(
    import_seed, coordinator, tmp_path: Path, zone, night, start, end
) -> None:
    site = site_in(zone)
    participant = enrolled_at(import_seed("000"), site, "SPRING-001", dt.date(2026, 2, 2))
    v3 = visit_at(participant, "V3")
    visit_book(
        visit=v3,
        local_date=night,
        local_time=dt.time(1, 0),
        by=coordinator,
        reason="spring-forward night",
    )
    v3 = visit_at(participant, "V3")
    stamp = timezone.now()

    readings = read_everywhere(
        {
            "participant feed": participant_feed_ical(participant, stamp=stamp),
            "site feed": site_feed_ical(site, trials=site_trials(site), stamp=stamp),
            "REQUEST": invite_content(v3, "REQUEST"),
        },
        tmp_path,
    )

    uid = visit_uid(v3)
    assert v3.visit_definition is not None
    assert (v3.visit_definition.duration_minutes, v3.booked_start) == (240, start)
    assert {
        (reader, name): reading[uid] if isinstance(reading, dict) else reading
        for reader, calendars in readings.items()
        for name, reading in calendars.items()
    } == {
        (reader, name): (start, end)
        for reader in READERS
        for name in ("participant feed", "site feed", "REQUEST")
    }
