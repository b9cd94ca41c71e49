"""The admin follows each person's language: the switch in its header stores it, every page
then reads in it (sign-in included); anyone without a choice gets their browser's."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse

from scheduler.models import ScheduledVisit, UserPreference
from scheduler.services import participant_enroll
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for

SWITCH = "/language"


@pytest.fixture
def coordinator(django_user_model, import_seed):
    version = import_seed("000")
    site = SiteFactory.create(code="nih-cc", name="NIH Clinical Center")
    participant = participant_for(version, anchors={"day1": dt.date(2026, 2, 2)}, site=site)
    participant_enroll(participant=participant, on=dt.date(2026, 1, 5))
    user = django_user_model.objects.create_user("kana", password="pw-kana-1234", is_staff=True)
    member(user, trial=version.trial, site=site)
    user.visit = ScheduledVisit.objects.get(participant=participant, visit_definition__code="V2")
    return user


def visit_page(visit: ScheduledVisit) -> str:
    return reverse("admin:scheduler_scheduledvisit_change", args=[visit.pk])


def test_the_switch_stores_the_choice_and_the_same_page_comes_back_in_japanese(
    client, coordinator
) -> None:
    sign_in(client, coordinator)
    page = visit_page(coordinator.visit)
    english = client.get(page).content.decode()
    assert '<html lang="en"' in english
    assert ">Book / reschedule</a>" in english
    assert 'name="language" value="ja" lang="ja" aria-pressed="false">日本語</button>' in english

    response = client.post(SWITCH, {"language": "ja", "next": page})

    assert response.status_code == 302
    assert response["Location"] == page
    assert UserPreference.objects.get(user=coordinator).language == "ja"
    japanese = client.get(page).content.decode()
    assert '<html lang="ja"' in japanese
    assert ">予約・予約変更</a>" in japanese
    assert ">実施を記録</a>" in japanese
    assert ">来院を中止</a>" in japanese
    # Django's own admin chrome, from Django's catalog.
    assert "ログアウト" in japanese
    assert 'aria-pressed="true" disabled>日本語</button>' in japanese


def test_a_lifecycle_page_and_its_form_read_in_japanese(client, coordinator) -> None:
    sign_in(client, coordinator)
    client.post(SWITCH, {"language": "ja", "next": "/admin/"})
    url = reverse("admin:scheduler_scheduledvisit_record_done", args=[coordinator.visit.pk])

    page = client.get(url).content.decode()

    assert "<h1>実施を記録</h1>" in page
    assert '<th scope="row">参加者</th>' in page
    assert "実施日（医療機関の現地時間）" in page
    assert "予定の検査・処置" in page
    assert 'value="プレビュー"' in page


def test_the_stored_choice_follows_the_person_to_their_next_sign_in(client, coordinator) -> None:
    sign_in(client, coordinator)
    client.post(SWITCH, {"language": "ja", "next": "/admin/"})

    elsewhere = Client()
    sign_in(elsewhere, coordinator)
    page = elsewhere.get(visit_page(coordinator.visit)).content.decode()

    assert ">予約・予約変更</a>" in page


def test_switching_back_to_english(client, coordinator) -> None:
    sign_in(client, coordinator)
    client.post(SWITCH, {"language": "ja", "next": "/admin/"})
    client.post(SWITCH, {"language": "en", "next": "/admin/"})

    page = client.get(visit_page(coordinator.visit)).content.decode()

    assert ">Book / reschedule</a>" in page
    assert UserPreference.objects.get(user=coordinator).language == "en"


@pytest.mark.parametrize("language", ["fr", "", "ja-JP", "JA", "日本語"])
def test_a_language_the_site_does_not_offer_is_a_400_that_says_which_it_does(
    client, coordinator, language
) -> None:
    sign_in(client, coordinator)

    response = client.post(SWITCH, {"language": language, "next": "/admin/"})

    assert response.status_code == 400
    assert response.content.decode() == (
        f"{language!r} is not a language of this site; choose one of: en, ja\n"
    )
    assert not UserPreference.objects.filter(user=coordinator).exists()


def test_the_switch_takes_a_post_with_its_csrf_token_only(coordinator) -> None:
    strict = Client(enforce_csrf_checks=True)
    sign_in(strict, coordinator)

    assert strict.get(SWITCH, {"language": "ja"}).status_code == 405
    assert strict.post(SWITCH, {"language": "ja"}).status_code == 403
    assert not UserPreference.objects.filter(user=coordinator).exists()


@pytest.mark.parametrize("next_page", ["https://evil.example/admin/", "//evil.example/", ""])
def test_the_switch_goes_back_only_to_a_page_of_this_site(client, coordinator, next_page) -> None:
    sign_in(client, coordinator)

    response = client.post(SWITCH, {"language": "ja", "next": next_page})

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_without_a_choice_the_browser_language_applies(client) -> None:
    japanese = client.get("/admin/login/", HTTP_ACCEPT_LANGUAGE="ja,en;q=0.5").content.decode()
    english = client.get("/admin/login/", HTTP_ACCEPT_LANGUAGE="en-US").content.decode()

    assert '<html lang="ja"' in japanese
    assert "ユーザー名" in japanese
    assert "治験来院スケジューラ" in japanese
    assert '<html lang="en"' in english
    assert "Trial visit scheduler" in english


def test_a_stored_choice_wins_over_the_browser(client, coordinator) -> None:
    UserPreference.objects.create(user=coordinator, language="ja")
    sign_in(client, coordinator)

    page = client.get(visit_page(coordinator.visit), HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert ">予約・予約変更</a>" in page


def test_choosing_on_the_sign_in_page_lasts_for_the_session(client, coordinator) -> None:
    login = client.get("/admin/login/").content.decode()
    assert 'id="language-switch"' in login

    client.post(SWITCH, {"language": "ja", "next": "/admin/login/"})
    # Signing in through the form, as a person does (django-axes needs the request).
    client.post("/admin/login/", {"username": "kana", "password": "pw-kana-1234"})
    page = client.get(visit_page(coordinator.visit)).content.decode()

    assert ">予約・予約変更</a>" in page
    # Not signed in when chosen: nothing stored for the person.
    assert not UserPreference.objects.filter(user=coordinator).exists()


def test_the_site_name_reads_in_japanese(client, coordinator) -> None:
    UserPreference.objects.create(user=coordinator, language="ja")
    sign_in(client, coordinator)

    page = client.get("/admin/").content.decode()

    assert " | 治験来院スケジューラ</title>" in page
    assert '<div id="site-name"><a href="/admin/">治験来院スケジューラ</a></div>' in page
