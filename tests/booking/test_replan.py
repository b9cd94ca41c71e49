"""A site-level re-plan: an out-of-service period or a closure lists the bookings it breaks,
proposes a slot for each (inside the window, none colliding, the calendars that move with
them), and the confirm rebooks them through visit_book, refused when the preview is stale."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse

from participants.models import Participant
from scheduler.models import BookingHold, Reminder, ScheduledVisit, UserPreference
from scheduler.services import (
    CalendarError,
    participant_enroll,
    site_replan,
    site_replan_preview,
    visit_book,
)
from tests.factories import SiteFactory, member, participant_for
from trials.models import Arm, ResourceOutOfService, SiteClosure, SiteResource

D = dt.date
T = dt.time
NEW_YORK = ZoneInfo("America/New_York")
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def niams(import_seed):
    return import_seed("000")


def enrolled(version, site, study_id: str, arm: str) -> Participant:
    participant = participant_for(
        version,
        anchors={"day1": D(2026, 2, 3)},
        site=site,
        study_id=study_id,
        email=f"{study_id.lower()}@example.org",
    )
    participant_enroll(
        participant=participant,
        on=D(2026, 1, 5),
        arm=Arm.objects.get(version=version, code=arm),
    )
    return participant


def visit(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.get(participant=participant, visit_definition__code=code)


def book(participant: Participant, code: str, day: dt.date, at: dt.time, by) -> ScheduledVisit:
    visit_book(visit=visit(participant, code), local_date=day, local_time=at, by=by)
    return visit(participant, code)


def local(instant: dt.datetime | None) -> str:
    assert instant is not None
    return f"{instant.astimezone(NEW_YORK):%a %Y-%m-%d %H:%M}"


def scanner_out(first: dt.date, last: dt.date, reason: str = "detector replacement"):
    return ResourceOutOfService.objects.create(
        resource=SiteResource.objects.get(name="PET/CT 1"),
        start=dt.datetime.combine(first, T(0), NEW_YORK),
        end=dt.datetime.combine(last + dt.timedelta(days=1), T(0), NEW_YORK),
        reason=reason,
    )


@pytest.fixture
def two_week32_scans(niams, niams_site, admin_user):
    """Two participants' week-32 visits (V10: labs, FDG-PET/CT, CAVI, infusion) booked on
    their target day, Tue 15 Sep, one after the other on the scanner; a third participant's
    calendar untouched."""
    first = enrolled(niams, niams_site, "P-001", "ANI")
    second = enrolled(niams, niams_site, "P-002", "PBO")
    book(first, "V10", D(2026, 9, 15), T(7, 45), admin_user)
    book(second, "V10", D(2026, 9, 15), T(9, 45), admin_user)
    return first, second


def scanner_holds() -> list[tuple[str, str, str, str]]:
    return [
        (
            h.visit.participant.study_id,
            h.visit.code,
            local(h.start),
            f"{h.end.astimezone(NEW_YORK):%H:%M}",
        )
        for h in BookingHold.objects.filter(resource__name="PET/CT 1")
        .select_related("visit__participant", "visit__visit_definition")
        .order_by("start")
    ]


def test_an_out_of_service_week_breaks_the_scans_it_overlaps_and_proposes_the_nearest_days(
    two_week32_scans,
) -> None:
    first, second = two_week32_scans
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))

    replan = site_replan_preview(cause=period)

    assert replan.cause == (
        "PET/CT 1 out of service from Tue 15 Sep 2026 00:00 EDT to Sat 19 Sep 2026 00:00 EDT "
        "(detector replacement)"
    )
    assert [
        (m.visit.participant.study_id, m.visit.code, local(m.old_start), local(m.slot.start))  # type: ignore[union-attr]
        for m in replan.moves
    ] == [
        ("P-001", "V10", "Tue 2026-09-15 07:45", "Mon 2026-09-14 07:45"),
        # The first proposal holds the scanner 08:00-09:50 that Monday.
        ("P-002", "V10", "Tue 2026-09-15 09:45", "Mon 2026-09-14 09:45"),
    ]
    assert [(m.deviation, m.reason) for m in replan.moves] == [(False, ""), (False, "")]
    # Follow-up is counted from V10 as booked: it moves a day earlier with it.
    assert [
        (p.study_id, [(c.visit_code, c.old_target, c.new_target) for c in diff.visits])
        for p, diff in replan.knock_on
    ] == [
        ("P-001", [("V11", D(2026, 10, 13), D(2026, 10, 12))]),
        ("P-002", [("V11", D(2026, 10, 13), D(2026, 10, 12))]),
    ]
    assert replan.not_yours == 0
    # A preview writes nothing.
    assert scanner_holds() == [
        ("P-001", "V10", "Tue 2026-09-15 08:00", "09:50"),
        ("P-002", "V10", "Tue 2026-09-15 10:00", "11:50"),
    ]


def test_confirming_rebooks_through_visit_book_moving_holds_with_history_and_invites(
    two_week32_scans, admin_user, django_capture_on_commit_callbacks
) -> None:
    first, second = two_week32_scans
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))
    replan = site_replan_preview(cause=period)
    history_before = visit(first, "V10").history.count()

    with django_capture_on_commit_callbacks(execute=True):
        result = site_replan(
            cause=period, digest=replan.digest, reason="PET/CT detector replacement", by=admin_user
        )

    assert [(b.visit_code, local(b.booked_start), b.deviation_days) for b in result.booked] == [
        ("V10", "Mon 2026-09-14 07:45", 0),
        ("V10", "Mon 2026-09-14 09:45", 0),
    ]
    assert result.unplaced == ()
    assert scanner_holds() == [
        ("P-001", "V10", "Mon 2026-09-14 08:00", "09:50"),
        ("P-002", "V10", "Mon 2026-09-14 10:00", "11:50"),
    ]
    moved = visit(first, "V10")
    assert (moved.status, moved.reason, moved.booked_date) == (
        "booked",
        "PET/CT detector replacement",
        D(2026, 9, 14),
    )
    latest = moved.history.latest()
    assert (latest.history_user, latest.history_change_reason) == (
        admin_user,
        "PET/CT detector replacement",
    )
    assert moved.history.count() > history_before
    assert visit(first, "V11").target_date == D(2026, 10, 12)
    # Each participant is sent the moved visit's updated invite (its SEQUENCE raised).
    assert sorted(
        Reminder.objects.filter(
            event="invite", visit__visit_definition__code="V10", ical_sequence=2
        ).values_list("participant__study_id", "visit__ical_sequence")
    ) == [("P-001", 2), ("P-002", 2)]


def test_a_stale_preview_is_refused_and_nothing_moves(
    two_week32_scans, niams, niams_site, admin_user
) -> None:
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))
    replan = site_replan_preview(cause=period)
    # Someone books the Monday morning scan the preview proposed.
    third = enrolled(niams, niams_site, "P-003", "ANI")
    book(third, "V10", D(2026, 9, 14), T(7, 45), admin_user)

    with pytest.raises(CalendarError) as refused:
        site_replan(cause=period, digest=replan.digest, reason="scanner down", by=admin_user)

    assert str(refused.value) == (
        "Bookings, visits or the site's calendar changed since this re-plan was previewed: "
        "nothing was rebooked. Preview it again and confirm what it then shows."
    )
    assert scanner_holds() == [
        ("P-003", "V10", "Mon 2026-09-14 08:00", "09:50"),
        ("P-001", "V10", "Tue 2026-09-15 08:00", "09:50"),
        ("P-002", "V10", "Tue 2026-09-15 10:00", "11:50"),
    ]
    # A fresh preview proposes around the new booking.
    assert [local(m.slot.start) for m in site_replan_preview(cause=period).moves] == [  # type: ignore[union-attr]
        "Mon 2026-09-14 09:45",
        "Mon 2026-09-14 11:45",
    ]


def test_a_visit_with_no_slot_in_its_window_gets_the_nearest_deviation_marked(
    niams, niams_site, admin_user
) -> None:
    participant = enrolled(niams, niams_site, "P-001", "ANI")
    # Week 0 (V2) has no window: Day 1 itself, Tue 3 Feb.
    book(participant, "V2", D(2026, 2, 3), T(7, 45), admin_user)
    period = scanner_out(D(2026, 2, 3), D(2026, 2, 4), reason="cooling failure")

    replan = site_replan_preview(cause=period)

    [move] = replan.moves
    assert move.slot is not None
    assert (local(move.slot.start), move.slot.days_out, move.deviation) == (
        "Mon 2026-02-02 07:45",
        -1,
        True,
    )
    assert move.reason == (
        "window 2026-02-03: PET/CT scanner unavailable at the needed times on 3 Feb "
        "(out of service: cooling failure)"
    )

    result = site_replan(
        cause=period, digest=replan.digest, reason="cooling failure", by=admin_user
    )

    assert [(b.visit_code, local(b.booked_start), b.deviation_days) for b in result.booked] == [
        ("V2", "Mon 2026-02-02 07:45", -1)
    ]


def test_a_closure_breaks_the_days_bookings_holding_nothing_too(
    niams, niams_site, admin_user
) -> None:
    participant = enrolled(niams, niams_site, "P-001", "ANI")
    # V3 has no plan inside the day: it holds nothing, but it needs the clinic open.
    book(participant, "V3", D(2026, 3, 3), T(7, 30), admin_user)
    book(participant, "V4", D(2026, 3, 31), T(7, 30), admin_user)
    closure = SiteClosure.objects.create(site=niams_site, date=D(2026, 3, 3), reason="snow")

    replan = site_replan_preview(cause=closure)

    assert replan.cause == "NIH Clinical Center closed on 2026-03-03 (snow)"
    assert [(m.visit.code, local(m.slot.start)) for m in replan.moves] == [  # type: ignore[union-attr]
        ("V3", "Mon 2026-03-02 07:30")
    ]
    # The week-4 CAVI visit counts 7 days from V3 as booked.
    assert [
        [(c.visit_code, c.old_target, c.new_target) for c in diff.visits]
        for _p, diff in replan.knock_on
    ] == [[("V3C", D(2026, 3, 10), D(2026, 3, 9))]]


def test_the_admin_previews_and_confirms_for_the_sites_coordinator_blinded(
    client, django_user_model, two_week32_scans, niams
) -> None:
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))
    coordinator = django_user_model.objects.create_user("coord", password="pw", is_staff=True)
    client.force_login(member(coordinator, trial=niams.trial, site=period.resource.site))
    url = reverse("admin:trials_resourceoutofservice_replan", args=[period.pk])

    change = client.get(reverse("admin:trials_resourceoutofservice_change", args=[period.pk]))
    preview = client.post(url, {"reason": "detector replacement"})

    assert f'href="{url}"' in change.text
    assert "Re-plan affected bookings" in change.text
    assert preview.status_code == 200
    assert "Tue 15 Sep 2026 07:45 EDT → Mon 2026-09-14 07:45 EDT" in preview.text
    assert "P-002: moves with it" in preview.text
    # Blinded: the preview names no arm (P-001 is on anifrolumab, P-002 on placebo).
    assert "Placebo" not in preview.text and "PBO" not in preview.text
    digest = preview.context["form"].data["digest"]

    confirmed = client.post(
        url, {"reason": "detector replacement", "digest": digest, "_confirm": "1"}
    )

    assert confirmed.status_code == 302
    assert scanner_holds() == [
        ("P-001", "V10", "Mon 2026-09-14 08:00", "09:50"),
        ("P-002", "V10", "Mon 2026-09-14 10:00", "11:50"),
    ]


def test_the_admin_marks_a_deviation_and_refuses_a_stale_confirm(
    client, django_user_model, niams, niams_site, admin_user
) -> None:
    participant = enrolled(niams, niams_site, "P-001", "ANI")
    book(participant, "V2", D(2026, 2, 3), T(7, 45), admin_user)
    period = scanner_out(D(2026, 2, 3), D(2026, 2, 4), reason="cooling failure")
    coordinator = django_user_model.objects.create_user("coord", password="pw", is_staff=True)
    client.force_login(member(coordinator, trial=niams.trial, site=niams_site))
    url = reverse("admin:trials_resourceoutofservice_replan", args=[period.pk])

    preview = client.post(url, {"reason": "cooling failure"})
    stale = client.post(url, {"reason": "cooling failure", "digest": "0" * 32, "_confirm": "1"})

    assert (
        "Tue 3 Feb 2026 07:45 EST → Mon 2026-02-02 07:45 EST (1 day before the window): "
        "DEVIATION, 1 day out of the window"
    ) in preview.text
    assert stale.status_code == 200
    assert "changed since this re-plan was previewed: nothing was rebooked" in stale.text
    assert local(visit(participant, "V2").booked_start) == "Tue 2026-02-03 07:45"


def test_the_replan_is_the_sites_writers_only(client, django_user_model, niams, niams_site) -> None:
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))
    other = SiteFactory.create(code="elsewhere")
    url = reverse("admin:trials_resourceoutofservice_replan", args=[period.pk])
    elsewhere = django_user_model.objects.create_user("else", password="pw", is_staff=True)
    monitor = django_user_model.objects.create_user("monitor", password="pw", is_staff=True)
    member(elsewhere, trial=niams.trial, site=other)
    member(monitor, trial=niams.trial, role="sponsor_monitor")

    client.force_login(elsewhere)
    other_site = client.get(url)
    client.force_login(monitor)
    read_only = client.get(url)

    assert (other_site.status_code, read_only.status_code) == (404, 403)


def test_only_the_callers_visits_move_and_the_others_are_counted(
    two_week32_scans, admin_user
) -> None:
    first, _second = two_week32_scans
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))
    mine = ScheduledVisit.objects.filter(participant=first)

    replan = site_replan_preview(cause=period, visits=mine)
    result = site_replan(
        cause=period, digest=replan.digest, reason="scanner down", by=admin_user, visits=mine
    )

    assert [(m.visit.participant.study_id, local(m.slot.start)) for m in replan.moves] == [  # type: ignore[union-attr]
        ("P-001", "Mon 2026-09-14 07:45")
    ]
    assert replan.not_yours == 1
    assert [local(b.booked_start) for b in result.booked] == ["Mon 2026-09-14 07:45"]
    assert scanner_holds() == [
        ("P-001", "V10", "Mon 2026-09-14 08:00", "09:50"),
        ("P-002", "V10", "Tue 2026-09-15 10:00", "11:50"),
    ]


def test_the_closure_page_offers_the_replan_to_the_sites_coordinator(
    client, django_user_model, niams, niams_site, admin_user
) -> None:
    participant = enrolled(niams, niams_site, "P-001", "ANI")
    book(participant, "V3", D(2026, 3, 3), T(7, 30), admin_user)
    closure = SiteClosure.objects.create(site=niams_site, date=D(2026, 3, 3), reason="snow")
    coordinator = django_user_model.objects.create_user("coord", password="pw", is_staff=True)
    client.force_login(member(coordinator, trial=niams.trial, site=niams_site))
    url = reverse("admin:trials_siteclosure_replan", args=[closure.pk])

    change = client.get(reverse("admin:trials_siteclosure_change", args=[closure.pk]))
    form = client.get(url)
    preview = client.post(url, {"reason": "snow"})

    assert f'href="{url}"' in change.text
    assert form.context["form"].initial == {"reason": "snow"}
    assert "Tue 3 Mar 2026 07:30 EST → Mon 2026-03-02 07:30 EST" in preview.text
    assert "V3C: target 2026-03-10 → 2026-03-09, window 2026-03-07 to 2026-03-11" in preview.text


def test_the_replan_reads_in_japanese(client, django_user_model, two_week32_scans, niams) -> None:
    period = scanner_out(D(2026, 9, 15), D(2026, 9, 18))
    coordinator = django_user_model.objects.create_user("coord", password="pw", is_staff=True)
    UserPreference.objects.create(user=coordinator, language="ja")
    client.force_login(member(coordinator, trial=niams.trial, site=period.resource.site))
    url = reverse("admin:trials_resourceoutofservice_replan", args=[period.pk])

    preview = client.post(url, {"reason": "detector replacement"})

    assert "影響を受ける予約を再計画" in preview.text
    assert "確定：予約し直す" in preview.text
    assert (
        "PET/CT 1は2026年9月15日(火) 00:00 EDTから2026年9月19日(土) 00:00 EDTまで使用停止"
        "（detector replacement）"
    ) in preview.text
    assert "P-001：連動して移動" in preview.text
