"""Adversarial review: site and participant feeds, booking capacity across clock changes and
the booking boards' parameters, and what a Japanese reader receives."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import translation
from icalendar import Calendar

from participants.models import Participant
from scheduler.calendars.feeds import feed_create, feed_path
from scheduler.models import BookingHold, Reminder, ScheduledVisit
from scheduler.outbox.channels import participant_text
from scheduler.services import CalendarError, participant_enroll, visit_book
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for, site_feed_create
from trials.models import Arm, ProtocolVersion, Site, SiteHours, SiteResource

pytestmark = pytest.mark.django_db
D = dt.date
T = dt.time
UTC = dt.UTC


def read(client: Client, path: str, **headers: str) -> Calendar:
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    body = (
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
        if getattr(response, "streaming", False)
        else response.content
    )
    return Calendar.from_ical(body)


def path_of(issued: tuple[Any, str]) -> str:
    feed, token = issued
    return feed_path(feed=feed, token=token)


# ----------------------------------------------------------------------------------------
# Japanese readers


@pytest.fixture
def tsukuba(db: Any) -> Site:
    return SiteFactory.create(
        code="tsukuba",
        name="筑波大学附属病院",
        timezone="Asia/Tokyo",
        country="JP",
        address="茨城県つくば市天久保2-1-1",
        phone="029-853-3186",
        email="visits@tsukuba.example",
    )


def tsukuba_participant(version: ProtocolVersion, site: Site, language: str) -> Participant:
    participant = participant_for(
        version,
        anchors={"psl_start": D(2026, 1, 26), "day1": D(2026, 2, 9)},
        weight_kg=Decimal(60),
        site=site,
        study_id=f"TSU-{language}",
        language=language,
        email=f"{language}@example.jp",
    )
    participant_enroll(participant=participant, on=D(2026, 1, 20))
    return participant


@pytest.fixture
def tokyo_clock() -> Any:
    with time_machine.travel(dt.datetime(2026, 1, 20, 3, tzinfo=UTC), tick=False):
        yield


def taper_summaries(calendar: Calendar) -> list[tuple[dt.date, str]]:
    return sorted(
        (event.decoded("DTSTART"), str(event["SUMMARY"]))
        for event in calendar.walk("VEVENT")
        if str(event["UID"]).startswith("milestone-")
    )[:2]


def test_a_japanese_participants_feed_names_the_taper_drug_without_english(
    import_seed, tsukuba, client, tokyo_clock
) -> None:
    version = import_seed("001")
    japanese = tsukuba_participant(version, tsukuba, "ja")
    english = tsukuba_participant(version, tsukuba, "en")

    theirs = taper_summaries(read(client, path_of(feed_create(participant=english))))
    mine = taper_summaries(read(client, path_of(feed_create(participant=japanese))))

    # The English reader's texts, as the seed file writes them.
    assert theirs == [
        (D(2026, 1, 26), "Prednisolone dose from today: 36 mg/day"),
        (D(2026, 2, 9), "Prednisolone dose from today: 31 mg/day"),
    ]
    # The Japanese reader's: the days and doses, and no English word where the protocol
    # gives the Japanese (name_ja: プレドニゾロンの投与量).
    assert [day for day, _summary in mine] == [D(2026, 1, 26), D(2026, 2, 9)]
    assert ["36 mg" in mine[0][1], "31 mg" in mine[1][1]] == [True, True]
    assert [summary for _day, summary in mine if "Prednisolone" in summary] == []
    assert all("プレドニゾロン" in summary for _day, summary in mine)


def test_a_japanese_participants_taper_reminder_has_no_english_drug_name(
    import_seed, tsukuba, tokyo_clock
) -> None:
    version = import_seed("001")
    japanese = tsukuba_participant(version, tsukuba, "ja")
    reminder = (
        Reminder.objects.filter(participant=japanese, milestone__isnull=False)
        .select_related("milestone__rule", "participant__site")
        .order_by("due_at", "id")
        .first()
    )
    assert reminder is not None
    with translation.override("ja"):
        subject, body = participant_text(reminder)

    assert reminder.milestone is not None
    assert reminder.milestone.dose_mg is not None
    dose = f"{reminder.milestone.dose_mg.normalize():f}"
    assert subject.startswith("本日から: ")
    assert f"1日 {dose} mg" in subject
    assert "Prednisolone" not in subject
    assert "プレドニゾロン" in subject


def test_a_site_feed_read_in_japanese_has_its_status_in_japanese(
    import_seed, tsukuba, client, tokyo_clock
) -> None:
    version = import_seed("001")
    tsukuba_participant(version, tsukuba, "ja")
    calendar = read(client, path_of(site_feed_create(site=tsukuba)), **{"Accept-Language": "ja"})
    first = min(calendar.walk("VEVENT"), key=lambda event: event.decoded("DTSTART"))

    # The visit's name is the protocol's Japanese one already ...
    assert str(first["SUMMARY"]).startswith(
        "tsukuba-early-ani TSU-ja · INF#1 アニフロルマブ点滴の来院"
    )
    # ... and its status reads as the catalog has it ("Status: %(status)s", "upcoming").
    assert str(first["DESCRIPTION"]).splitlines()[0] == "状況: 予定"
    assert "治験の来院予定" in str(calendar["X-WR-CALNAME"])


# ----------------------------------------------------------------------------------------
# The boards' parameters


NIAMS_DAY1 = D(2026, 2, 3)


def niams_board_site() -> Site:
    site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center")
    SiteHours.objects.bulk_create(
        SiteHours(site=site, weekday=d, start=T(7, 30), end=T(17, 30)) for d in range(5)
    )
    SiteResource.objects.create(site=site, kind="PET/CT scanner", name="PET/CT 1")
    SiteResource.objects.create(site=site, kind="infusion chair", name="Chair 1")
    SiteResource.objects.create(site=site, kind="CAVI device", name="CAVI 1")
    return site


def niams_enrolled(
    version: ProtocolVersion, site: Site, study_id: str, day1: dt.date
) -> Participant:
    participant = participant_for(
        version,
        anchors={"day1": day1, "consent": day1 - dt.timedelta(days=30)},
        site=site,
        study_id=study_id,
    )
    participant_enroll(
        participant=participant,
        on=day1 - dt.timedelta(days=14),
        arm=Arm.objects.get(version=version, code="ANI"),
    )
    return participant


def test_the_timelines_slot_picker_answers_a_week_off_the_calendar_without_a_500(
    import_seed, client, django_user_model
) -> None:
    week = "9999-12-31"
    version = import_seed("000")
    site = niams_board_site()
    with time_machine.travel(dt.datetime(2026, 2, 2, 15, tzinfo=UTC), tick=False):
        due = ScheduledVisit.objects.get(
            participant=niams_enrolled(version, site, "NIH-001", NIAMS_DAY1),
            visit_definition__code="V2",
        )
        user = django_user_model.objects.create_user("c", is_staff=True)
        sign_in(client, member(user, trial=version.trial, site=site))
        client.raise_request_exception = False
        timeline = reverse("admin:participants_participant_timeline", args=[due.participant_id])
        response = client.get(f"{timeline}?pick={due.pk}&week={week}")

    assert response.status_code in (200, 400)


def round_the_clock(zone: str, code: str) -> Site:
    site = SiteFactory.create(code=code, name=f"Clinic {code}", timezone=zone)
    SiteHours.objects.bulk_create(
        SiteHours(site=site, weekday=d, start=T(0), end=T(23, 59)) for d in range(7)
    )
    SiteResource.objects.create(site=site, kind="PET/CT scanner", name="PET/CT 1")
    SiteResource.objects.create(site=site, kind="CAVI device", name="CAVI 1", capacity=3)
    SiteResource.objects.create(site=site, kind="Infusion chair", name="Chair 1", capacity=3)
    return site


def test_a_scanner_booked_at_0130_on_the_fall_back_night_blocks_both_runs_of_the_hour(
    import_seed, django_user_model
) -> None:
    """New York, 1 November 2026: 01:30 names its first run (EDT, 05:30Z). The 110-minute
    scan runs 05:45Z-07:35Z (01:45 EDT to 02:35 EST); a second participant's scan cannot
    overlap it in real time, whichever run of the repeated hour the wall clock names."""
    version = import_seed("000")
    site = round_the_clock("America/New_York", "ny")
    with time_machine.travel(dt.datetime(2026, 10, 20, 12, tzinfo=UTC), tick=False):
        user = django_user_model.objects.create_user("c")
        first, second = (
            ScheduledVisit.objects.get(
                participant=niams_enrolled(version, site, f"NY-{n}", D(2026, 11, 1)),
                visit_definition__code="V2",
            )
            for n in (1, 2)
        )
        visit_book(visit=first, local_date=D(2026, 11, 1), local_time=T(1, 30), by=user)
        refused = []
        for moment in (T(1, 0), T(1, 30), T(2, 0)):
            with pytest.raises(CalendarError) as refusal:
                visit_book(visit=second, local_date=D(2026, 11, 1), local_time=moment, by=user)
            refused.append(str(refusal.value).split(": ", 1)[1].split(". ")[0])
        visit_book(visit=second, local_date=D(2026, 11, 1), local_time=T(2, 30), by=user)

    def scans(visit: ScheduledVisit) -> list[tuple[dt.datetime, dt.datetime]]:
        return list(
            BookingHold.objects.filter(visit=visit, procedure="FDGPET").values_list("start", "end")
        )

    assert scans(first) == [
        (dt.datetime(2026, 11, 1, 5, 45, tzinfo=UTC), dt.datetime(2026, 11, 1, 7, 35, tzinfo=UTC))
    ]
    assert refused == [
        "the PET/CT scanner is full from 01:15 to 02:05 (needed for FDGPET)",
        "the PET/CT scanner is full from 01:45 to 02:35 (needed for FDGPET)",
        "the PET/CT scanner is full from 02:15 to 04:05 (needed for FDGPET)",
    ]
    assert scans(second) == [
        (dt.datetime(2026, 11, 1, 7, 45, tzinfo=UTC), dt.datetime(2026, 11, 1, 9, 35, tzinfo=UTC))
    ]
