"""The pages added with the start page, in Japanese: the start page, a participant's timeline
(with its taper chart), the screening log and a site's amendment preview, read by a coordinator
whose language is Japanese. Exact texts from the catalog; the CSV export stays English."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import time_machine
from django.urls import reverse

from participants.models import Participant
from scheduler.models import UserPreference
from scheduler.services import participant_screen_fail
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for
from tests.scheduler.test_amendments_and_audit import enrolled, tsukuba_amendment
from tests.workspace.conftest import NOW as WORKSPACE_NOW
from tests.workspace.conftest import World, build_world
from trials.models import ProtocolVersion, Site, TrialSite

D = dt.date
# 12:00 on 25 March 2026 in Tsukuba.
TSUKUBA_NOW = dt.datetime(2026, 3, 25, 3, 0, tzinfo=dt.UTC)

pytestmark = pytest.mark.django_db


def japanese(user: Any, client: Any) -> Any:
    UserPreference.objects.create(user=user, language="ja")
    sign_in(client, user)
    return user


def coordinator(django_user_model: Any, name: str, *, trial: Any, site: Site | None) -> Any:
    user = django_user_model.objects.create_user(name, is_staff=True)
    return member(user, trial=trial, site=site)


# ----------------------------------------------------------------------------------------
# The start page and the visit list


@pytest.fixture
def world(import_seed: Callable[[str], ProtocolVersion], django_user_model: Any) -> World:
    builder = django_user_model.objects.create_user("builder")
    return build_world(import_seed, builder)


@pytest.fixture
def at_workspace_now() -> Iterator[None]:
    with time_machine.travel(WORKSPACE_NOW, tick=False):
        yield


def test_the_start_page_reads_in_japanese(
    client: Any, django_user_model: Any, world: World, at_workspace_now: None
) -> None:
    japanese(coordinator(django_user_model, "kana", trial=world.niams.trial, site=world.ny), client)

    response = client.get(reverse("admin:index"))
    page = response.content.decode()

    assert "<h1>本日の業務</h1>" in page
    (block,) = response.context["site_blocks"]
    assert [section.title for section in block["sections"]] == [
        "本日の予約",
        "今週これからの予約",
        "許容期間中で未予約",
        "期限超過",
        "未実施（過去 14 日以内に許容期間が終了）",
        "理由が未記入の逸脱",
        "今週の漸減の判断",
        "送信に失敗した・結果が不明なリマインダーと Webhook 配信",
    ]
    for heading in (
        "参加者",
        "内容",
        "日時（医療機関の現地時間）",
        "検査・処置",
        "使用設備",
        "状況",
    ):
        assert f'<th scope="col">{heading}</th>' in page
    rows = {
        section.key: [(row.when, row.status, row.action.label) for row in section.rows]
        for section in block["sections"]
        if section.key in ("due", "missed", "deviation")
    }
    assert rows == {
        "due": [("許容期間 2026-03-07 から 2026-03-11: あと1日で終了", "予約受付中", "予約")],
        "missed": [("許容期間 2026-02-27 から 2026-03-05", "未実施", "カレンダーを開く")],
        "deviation": [("2026-01-25 に実施、許容期間の6日後", "許容期間外", "理由を記録")],
    }
    due = next(section for section in block["sections"] if section.key == "due")
    assert [(count.label, count.number) for count in due.counts] == [
        ("すべて", 1),
        ("3日以内に終了", 1),
    ]
    outbox = next(section for section in block["sections"] if section.key == "outbox")
    assert [row.status for row in outbox.rows] == [
        "2回の試行後、失敗（再試行予定）",
        "5回の試行後、送信不能（再試行終了）",
    ]
    assert [count.label for count in outbox.counts] == ["メール", "Webhook 配信"]
    assert "日付は医療機関の現地の日付です" in page


def test_the_visit_lists_filters_read_in_japanese_and_its_csv_stays_english(
    client: Any, django_user_model: Any, world: World, at_workspace_now: None
) -> None:
    japanese(coordinator(django_user_model, "kana", trial=world.niams.trial, site=world.ny), client)
    url = reverse("admin:scheduler_scheduledvisit_changelist")

    # The start page's "windows open, nothing booked" list.
    due = {"status__exact": "planned", "window": "open"}
    page = client.get(url, due).content.decode()
    export = client.get(reverse("admin:scheduler_scheduledvisit_export"), due)
    csv = b"".join(export.streaming_content).decode()

    assert "<summary>エクスポート</summary>" in page
    assert "この 1 行を CSV でダウンロード" in page
    for choice in (
        "本日が許容期間内",
        "3日以内に終了",
        "過去14日以内に終了",
        "今週（本日から7日間）",
    ):
        assert choice in page
    assert "許容期間外に実施、理由が未記入" in page
    header, row = csv.splitlines()[:2]
    assert header.startswith("\ufefftrial,site,study id,visit,visit name,status,target date,")
    assert ",due," in row


# ----------------------------------------------------------------------------------------
# A Tsukuba participant's timeline and the site's amendment


@pytest.fixture
def tsukuba(import_seed: Callable[[str], ProtocolVersion]) -> Iterator[tuple[Any, ...]]:
    with time_machine.travel(TSUKUBA_NOW, tick=False):
        v10 = import_seed("001")
        site = SiteFactory.create(code="tsukuba", name="Tsukuba", timezone="Asia/Tokyo")
        first = enrolled(v10, site, "T-001")
        enrolled(v10, site, "T-002")
        yield v10, TrialSite.objects.get(site=site), first


def test_a_timeline_reads_in_japanese(
    client: Any, django_user_model: Any, tsukuba: tuple[Any, ...]
) -> None:
    v10, here, participant = tsukuba
    japanese(coordinator(django_user_model, "kana", trial=v10.trial, site=here.site), client)

    page = client.get(
        reverse("admin:participants_participant_timeline", args=[participant.pk])
    ).content.decode()

    assert f"<h1>{participant} のタイムライン</h1>" in page
    assert "<h2>来院とマイルストーン</h2>" in page
    assert "医療機関の今日（2026-03-25）の時点で印刷。" in page
    assert '<th scope="row">状況</th><td>登録済み</td>' in page
    assert "Tsukuba（日付は医療機関の現地時間、Asia/Tokyo。現地の今日は 2026-03-25）" in page
    for heading in ("許容期間（医療機関の現地時間）", "予約・実施", "期日（医療機関の現地時間）"):
        assert heading in page
    # The chart: its legend, its months ("2026年3月") and today, in Japanese.
    assert ">状況:</text>" in page
    assert ">予約日または実施日</text>" in page
    assert 'class="month-label">2026年3月</text>' in page
    assert ">本日 2026-03-25</text>" in page
    # The taper chart: its title, legend, axis and week labels.
    assert "、週ごとの用量</h2>" in page
    assert ">投与済み</text>" in page
    assert ">保留（用量据え置き）</text>" in page
    assert ">mg/日</text>" in page
    assert ">第1週</text>" in page
    assert ">3月16日</text>" in page
    assert "Timeline of" not in page


def test_an_amendment_preview_reads_in_japanese(
    client: Any, django_user_model: Any, tsukuba: tuple[Any, ...]
) -> None:
    v10, here, _participant = tsukuba
    with time_machine.travel(TSUKUBA_NOW, tick=False):
        v11 = tsukuba_amendment()
        japanese(coordinator(django_user_model, "kana", trial=v10.trial, site=here.site), client)
        url = reverse("admin:trials_trialsite_approve", args=[here.pk])

        form = client.get(url).content.decode()
        preview = client.post(
            url,
            {
                "version_id": str(v11.pk),
                "approved_on": "2026-03-24",
                "on": "2026-04-01",
                "reason": "amendment 1",
            },
        ).content.decode()

    assert "<h2>承認を記録して参加者を移行</h2>" in form
    assert "治験審査委員会の承認日" in form
    assert "参加者の移行開始日（医療機関の現地時間）" in form
    assert "<h2>承認を記録して参加者を移行: 行われること</h2>" in preview
    assert '<th scope="row">承認する版</th>' in preview
    assert f"<td>{v11}（2026-03-24 承認）</td>" in preview
    assert '<th scope="row">移行する参加者</th><td>2 人（2026-04-01 から）</td>' in preview
    assert "移行日より前のものは元の版のままです。" in preview
    assert "<h2>移行する参加者とそのカレンダー</h2>" in preview
    assert 'value="承認と移行を確定"' in preview


# ----------------------------------------------------------------------------------------
# The screening log


def test_the_screening_log_reads_in_japanese(
    client: Any, django_user_model: Any, import_seed: Callable[[str], ProtocolVersion]
) -> None:
    with time_machine.travel(dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC), tick=False):
        version = import_seed("000")
        nih = SiteFactory.create(code="nih-cc", name="NIH CC", timezone="America/New_York")
        day1 = {"day1": D(2026, 3, 16), "consent": D(2026, 2, 20)}
        participant_for(version, anchors=day1, site=nih, study_id="A")
        failed = participant_for(version, anchors=day1, site=nih, study_id="C")
        user = coordinator(django_user_model, "kana", trial=version.trial, site=nih)
        participant_screen_fail(participant=failed, on=D(2026, 3, 2), by=user, reason="eGFR < 30")
        japanese(user, client)

        response = client.get(reverse("admin:participants_participant_screening_log"))
    page = response.content.decode()

    assert "<h1>スクリーニング記録</h1>" in page
    for heading in (
        "スクリーニング登録日時",
        "自動チェック",
        "治験責任医師・分担医師の確認",
        "結果",
        "次の手順",
    ):
        assert f'<th scope="col">{heading}</th>' in page
    assert "スクリーニング登録: <strong>2</strong>" in page
    assert "スクリーニング中: <strong>1</strong>" in page
    assert "スクリーニング不適格: <strong>1</strong>" in page
    assert [(row.participant.study_id, row.outcome) for row in response.context["rows"]] == [
        ("A", "スクリーニング中"),
        ("C", "2026-03-02 にスクリーニング不適格"),
    ]
    assert ">適格性を確認して登録</a>" in page
    assert Participant.objects.count() == 2
