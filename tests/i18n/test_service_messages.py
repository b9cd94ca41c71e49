"""The services' refusals read in the reader's language: the admin follows each user's choice,
the API the Accept-Language header (English without one; the problem's `type` is the same in
both), and the slot finder's reasons name a Japanese site's holidays by their Japanese names.
Exact texts from the catalog."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from django.utils import translation
from rest_framework.test import APIClient

from participants.models import Participant
from scheduler.booking import site_calendar
from scheduler.models import Membership, ScheduledVisit, UserPreference
from scheduler.services import (
    CalendarError,
    EnrollmentError,
    participant_enroll,
    visit_book,
    visit_record_done,
)
from tests.booking.conftest import niams_calendar
from tests.factories import SiteFactory, member, participant_for
from trials.models import SiteHours

D = dt.date
T = dt.time
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def niams_participant(import_seed) -> Participant:
    version = import_seed("000")
    site = niams_calendar(SiteFactory.create(code="nih-cc", name="NIH Clinical Center"))
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 3)}, site=site, study_id="P-001"
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


def v(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.get(participant=participant, visit_definition__code=code)


def refusal(call, language: str) -> str:
    with translation.override(language), pytest.raises(CalendarError) as refused:
        call()
    return str(refused.value)


def test_a_closed_visit_and_a_missing_reason_are_refused_in_japanese(
    niams_participant, admin_user
) -> None:
    v1, v3 = v(niams_participant, "V1"), v(niams_participant, "V3")
    with time_machine.travel(dt.datetime(2026, 3, 8, 15, tzinfo=dt.UTC), tick=False):
        late = refusal(
            lambda: visit_record_done(visit=v3, actual_date=D(2026, 3, 8), by=admin_user), "ja"
        )
        english = refusal(
            lambda: visit_record_done(visit=v3, actual_date=D(2026, 3, 8), by=admin_user), "en"
        )
    assert late == ("理由が必要です：V3は許容期間（2026-02-28〜2026-03-06）の2日後に実施されました")
    assert english == (
        "a reason is required: V3 was done 2 days after its window (2026-02-28 to 2026-03-06)"
    )

    with time_machine.travel(dt.datetime(2026, 1, 6, 15, tzinfo=dt.UTC), tick=False):
        visit_record_done(visit=v1, actual_date=D(2026, 1, 6), by=admin_user)
        again = refusal(
            lambda: visit_book(visit=v1, local_date=D(2026, 1, 9), local_time=T(9), by=admin_user),
            "ja",
        )
    assert again == (
        "niams-ani-vascular/P-001のV1は「実施済み」です。予約できるのは予定または予約済みの来院"
        "のみです（実施済み・未実施・中止の来院は履歴です）"
    )


def test_a_closed_day_and_the_nearest_starts_read_in_japanese(
    niams_participant, admin_user
) -> None:
    v2 = v(niams_participant, "V2")  # window 2026-02-03 only
    saturday = refusal(
        lambda: visit_book(
            visit=v2,
            local_date=D(2026, 2, 7),
            local_time=T(9),
            by=admin_user,
            reason="participant's request",
        ),
        "ja",
    )
    assert saturday == (
        "V2は2026-02-07 09:00に開始できません：2月7日は休診（週末）。最も近い予約可能な開始時刻："
        "2026-02-03(火) 07:45 EST"
    )


def test_a_tsukuba_holiday_is_named_in_japanese_for_a_japanese_reader() -> None:
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo", country="JP")
    SiteHours.objects.bulk_create(
        SiteHours(site=site, weekday=d, start=T(8, 30), end=T(17)) for d in range(5)
    )
    with translation.override("ja"):
        japanese = site_calendar(site, D(2026, 11, 1), D(2026, 11, 30)).closures
    with translation.override("en"):
        english = site_calendar(site, D(2026, 11, 1), D(2026, 11, 30)).closures
    assert [(c.day, c.reason) for c in japanese] == [
        (D(2026, 11, 3), "文化の日"),
        (D(2026, 11, 23), "勤労感謝の日"),
    ]
    assert [(c.day, c.reason) for c in english] == [
        (D(2026, 11, 3), "Culture Day"),
        (D(2026, 11, 23), "Labor Thanksgiving Day"),
    ]


def test_eligibility_failures_read_in_japanese(import_seed) -> None:
    version = import_seed("000")
    participant = participant_for(
        version, anchors={"day1": D(2026, 2, 3)}, birth_date=D(2010, 6, 1), study_id="Y-1"
    )
    participant.weight_kg = Decimal("61.5")
    participant.save()
    with translation.override("ja"), pytest.raises(EnrollmentError) as refused:
        participant_enroll(participant=participant, on=D(2026, 1, 5))
    age = [p for p in refused.value.problems if "年齢" in p]
    assert len(age) == 1
    assert (
        age[0].endswith(": 年齢 15 歳は必要な範囲外です（≥ 18かつ≤ 70）") or "年齢 15 歳" in age[0]
    )


def test_the_admin_shows_a_refusal_in_the_users_language(
    client, django_user_model, niams_participant
) -> None:
    user = django_user_model.objects.create_user("kana", is_staff=True)
    member(user, trial=niams_participant.trial, site=niams_participant.site)
    UserPreference.objects.create(user=user, language="ja")
    client.force_login(user)
    v2 = v(niams_participant, "V2")
    page = client.post(
        reverse("admin:scheduler_scheduledvisit_book", args=[v2.pk]),
        {
            "version": v2.version,
            "local_date": "2026-02-07",
            "local_time": "09:00",
            "reason": "participant's request",
            "_preview": "1",
        },
    )
    assert page.status_code == 200
    assert "V2は2026-02-07 09:00に開始できません：2月7日は休診（週末）。" in page.content.decode()


@pytest.mark.parametrize(
    ("language", "detail"),
    [
        (None, "niams-ani-vascular/P-001 is withdrawn: the calendar is closed"),
        ("en-US,en;q=0.9", "niams-ani-vascular/P-001 is withdrawn: the calendar is closed"),
        ("ja,en;q=0.5", "niams-ani-vascular/P-001は「参加中止」です：カレンダーは閉じられています"),
    ],
)
def test_the_api_words_a_refusal_by_accept_language(
    niams_participant, django_user_model, language, detail
) -> None:
    Participant.objects.filter(pk=niams_participant.pk).update(status=Participant.Status.WITHDRAWN)
    user = django_user_model.objects.create_user("coordinator")
    Membership.objects.create(
        user=user,
        trial=niams_participant.trial,
        site=niams_participant.site,
        role=Membership.Role.COORDINATOR,
    )
    client = APIClient()
    client.force_authenticate(user)
    visit = v(niams_participant, "V2")
    headers = {"HTTP_ACCEPT_LANGUAGE": language} if language else {}
    read = client.get(f"/api/v1/visits/{visit.pk}/", **headers)
    response = client.post(
        f"/api/v1/visits/{visit.pk}/book/preview/",
        {"local_date": "2026-02-03", "local_time": "09:00"},
        format="json",
        **headers,
    )
    assert read.status_code == 200
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["type"] == "/api/v1/problems/refused"
    assert body["detail"] == detail
