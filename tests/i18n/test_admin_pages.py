"""The admin's own pages in Japanese: a lifecycle action through its preview, a participant's
calendar feeds, the registration of a candidate. Exact texts from the catalog."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from participants.models import Participant
from scheduler.models import Membership, ScheduledVisit, UserPreference
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for


@pytest.fixture
def japanese_coordinator(client, django_user_model, import_seed):
    version = import_seed("000")
    site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center")
    participant = participant_for(version, anchors={"day1": dt.date(2026, 2, 2)}, site=site)
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    user = django_user_model.objects.create_user("kana", is_staff=True)
    member(user, trial=version.trial, site=site)
    UserPreference.objects.create(user=user, language="ja")
    sign_in(client, user)
    return participant


def test_a_preview_reads_in_japanese(client, japanese_coordinator) -> None:
    visit = ScheduledVisit.objects.get(
        participant=japanese_coordinator, visit_definition__code="V2"
    )
    url = reverse("admin:scheduler_scheduledvisit_record_done", args=[visit.pk])

    page = client.post(
        url,
        {"version": visit.version, "actual_date": "2026-02-02", "reason": "", "_preview": "1"},
    ).content.decode()

    assert "<h2>実施を記録: 行われること</h2>" in page
    assert '<th scope="row">実施日（医療機関の現地時間）</th>' in page
    assert '<th scope="row">逸脱</th>' in page
    assert "なし: 許容期間内（" in page
    assert "<h2>カレンダーの変更</h2>" in page
    assert "まだ何も保存されていません。" in page
    assert 'value="確定: 実施済みとして記録"' in page
    assert 'value="フォームに戻る"' in page


def test_a_participants_feed_page_reads_in_japanese(client, japanese_coordinator) -> None:
    url = reverse("admin:scheduler_calendarfeed_participant", args=[japanese_coordinator.pk])

    page = client.get(url).content.decode()

    assert "カレンダーフィード" in page
    assert "フィードはまだありません。" in page
    assert 'value="フィードを作成"' in page


def test_registering_a_candidate_reads_in_japanese(client, japanese_coordinator) -> None:
    page = client.get(reverse("admin:participants_participant_add")).content.decode()

    assert "<h2>治験と医療機関</h2>" in page
    assert 'value="次へ"' in page


def test_the_roles_read_in_japanese(japanese_coordinator) -> None:
    from django.utils import translation

    with translation.override("ja"):
        assert str(Membership.Role.COORDINATOR.label) == "コーディネーター"
        assert str(Membership.Role.SPONSOR_MONITOR.label) == "モニター（治験依頼者）"
    assert str(Membership.Role.COORDINATOR.label) == "Coordinator"
    assert Participant.objects.count() == 1


def test_the_message_after_a_confirmed_action_reads_in_japanese(
    client, japanese_coordinator
) -> None:
    visit = ScheduledVisit.objects.get(
        participant=japanese_coordinator, visit_definition__code="V2"
    )
    url = reverse("admin:scheduler_scheduledvisit_record_done", args=[visit.pk])

    response = client.post(
        url,
        {"version": visit.version, "actual_date": "2026-02-02", "reason": "", "_confirm": "1"},
        follow=True,
    )

    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith(f"{visit.code} を 2026-02-02 に実施済みとして記録しました。")


def test_the_visit_list_reads_in_japanese(client, japanese_coordinator) -> None:
    page = client.get(reverse("admin:scheduler_scheduledvisit_changelist")).content.decode()

    assert "要対応" in page  # the "needs attention" filter
    assert "予約受付中（許容期間内）" in page
    assert ">状況</a>" in page  # the status column, sortable
