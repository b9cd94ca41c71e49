"""The calendar stays true: visits done, missed, moved, amended, withdrawn — and audited."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine

from participants.models import Participant
from scheduler.calendar import CalendarDiff, MilestoneChange, VisitChange
from scheduler.models import ScheduledMilestone, ScheduledProcedure, ScheduledVisit
from scheduler.services import (
    CalendarError,
    VisitConflict,
    participant_anchor_change,
    participant_anchor_change_preview,
    participant_enroll,
    participant_withdraw,
    taper_adjust,
    taper_adjust_preview,
    visit_add_unscheduled,
    visit_book,
    visit_book_preview,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
    visit_record_done_preview,
)
from tests.factories import participant_for

D = dt.date
NOW = dt.datetime(2026, 12, 31, 12, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def february(frozen_clock):
    """Before the NIAMS calendar's March visits: bookings are refused in the past at the site,
    so tests that book them run on this day (test_booking_rules has the rule itself)."""
    with time_machine.travel(dt.datetime(2026, 2, 20, 12, 0, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator", password="a-long-passphrase")


@pytest.fixture
def niams(import_seed) -> Participant:
    participant = participant_for(
        import_seed("000"), anchors={"day1": D(2026, 2, 2)}, birth_date=D(1980, 6, 15)
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5))
    return participant


@pytest.fixture
def tsukuba(import_seed) -> Participant:
    participant = participant_for(
        import_seed("001"),
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
        weight_kg=Decimal(60),
        birth_date=D(1980, 6, 15),
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


def visit(participant: Participant, code: str, occurrence: int = 1) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code, occurrence=occurrence
    )


def calendar(participant: Participant) -> dict[str, tuple]:
    return {
        v.code: (v.target_date, v.window_start, v.window_end, v.status)
        for v in ScheduledVisit.objects.filter(participant=participant).select_related(
            "visit_definition"
        )
    }


def history_entries(model, since: dt.datetime) -> list[tuple[int, str, str, str]]:
    return sorted(
        (
            h.id,
            h.history_type,
            h.history_user.username if h.history_user else "",
            h.history_change_reason or "",
        )
        for h in model.history.filter(history_date__gte=since).select_related("history_user")
    )


def test_visit_done_5_days_late_moves_only_what_counts_from_it_by_5_days(
    niams, coordinator
) -> None:
    v3 = visit(niams, "V3")
    before = calendar(niams)

    preview = visit_record_done_preview(visit=v3, actual_date=D(2026, 3, 7))
    applied = visit_record_done(
        visit=v3, actual_date=D(2026, 3, 7), by=coordinator, reason="participant had a cold"
    )

    assert (
        preview
        == applied
        == CalendarDiff(
            visits=(
                VisitChange(
                    "V3C",
                    1,
                    D(2026, 3, 9),
                    (D(2026, 3, 7), D(2026, 3, 11)),
                    D(2026, 3, 14),
                    (D(2026, 3, 12), D(2026, 3, 16)),
                    None,
                    "1.0",
                    "1.0",
                ),
            )
        )
    )
    after = calendar(niams)
    assert {code for code in after if after[code] != before[code]} == {"V3", "V3C"}
    assert (after["V3C"][0] - before["V3C"][0]).days == 5
    v3.refresh_from_db()
    assert (v3.status, v3.actual_date, v3.deviation_days) == ("done", D(2026, 3, 7), 2)


def test_visit_done_outside_its_window_needs_a_reason(niams, coordinator) -> None:
    with pytest.raises(CalendarError) as caught:
        visit_record_done(visit=visit(niams, "V3"), actual_date=D(2026, 3, 7), by=coordinator)

    assert str(caught.value) == (
        "a reason is required: V3 was done 2 days after its window (2026-02-27 to 2026-03-05)"
    )
    assert visit(niams, "V3").status == "planned"


def test_visit_done_records_procedures_done_and_not_done_with_reasons(niams, coordinator) -> None:
    visit_record_done(
        visit=visit(niams, "V2"),
        actual_date=D(2026, 2, 2),
        by=coordinator,
        procedures_not_done={"FDGPET": "scanner out of service"},
    )

    assert sorted(
        ScheduledProcedure.objects.filter(
            visit__participant=niams, visit__visit_definition__code="V2"
        ).values_list("procedure__code", "status", "not_done_reason")
    ) == [
        ("CAVI", "done", ""),
        ("EXAM", "done", ""),
        ("FDGPET", "not_done", "scanner out of service"),
        ("INFUSION", "done", ""),
        ("LABS", "done", ""),
        ("SLEQ", "done", ""),
    ]


def test_visit_done_in_the_future_is_refused(niams, coordinator) -> None:
    with pytest.raises(CalendarError) as caught:
        visit_record_done(visit=visit(niams, "V11"), actual_date=D(2027, 1, 2), by=coordinator)

    assert str(caught.value) == (
        "V11 cannot be recorded as done on 2027-01-02: that is after today (2026-12-31) at the site"
    )


def test_booking_out_of_window_is_a_deviation_with_days_out_and_a_reason(
    february, niams, coordinator
) -> None:
    v4 = visit(niams, "V4")  # window 2026-03-27 .. 2026-04-02

    with pytest.raises(CalendarError) as caught:
        visit_book(visit=v4, local_date=D(2026, 4, 6), local_time=dt.time(9, 30), by=coordinator)
    preview = visit_book_preview(visit=v4, local_date=D(2026, 4, 6), local_time=dt.time(9, 30))
    booked = visit_book(
        visit=v4,
        local_date=D(2026, 4, 6),
        local_time=dt.time(9, 30),
        by=coordinator,
        reason="site closed for Easter",
    )

    assert str(caught.value) == (
        "a reason is required: 2026-04-06 is 4 days after the window of V4 "
        "(2026-03-27 to 2026-04-02)"
    )
    assert preview == booked
    assert (booked.booked_start, booked.deviation_days) == (
        dt.datetime(2026, 4, 6, 13, 30, tzinfo=dt.UTC),
        4,
    )
    v4.refresh_from_db()
    assert (v4.status, v4.booked_date, v4.deviation_days, v4.version) == (
        "booked",
        D(2026, 4, 6),
        4,
        2,
    )


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        # The Monday after the US spring change (2026-03-08) and the Monday before it.
        ("America/New_York", D(2026, 3, 9), dt.datetime(2026, 3, 9, 13, 30, tzinfo=dt.UTC)),
        ("America/New_York", D(2026, 3, 2), dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC)),
        ("Asia/Tokyo", D(2026, 3, 9), dt.datetime(2026, 3, 9, 0, 30, tzinfo=dt.UTC)),
        ("Asia/Tokyo", D(2026, 3, 2), dt.datetime(2026, 3, 2, 0, 30, tzinfo=dt.UTC)),
    ],
)
def test_booking_is_stored_in_utc_from_site_local_time(
    february, niams, coordinator, zone, day, expected
) -> None:
    niams.site.timezone = zone
    niams.site.save(update_fields=["timezone"])
    v3 = visit(niams, "V3")

    booked = visit_book(
        visit=v3,
        local_date=day,
        local_time=dt.time(9, 30),
        by=coordinator,
        reason="" if day == D(2026, 3, 2) else "late, out of window",
    )

    assert booked.booked_start == expected


def test_rebooking_a_booked_visit_needs_a_reason_and_moves_what_counts_from_it(
    february, niams, coordinator
) -> None:
    v3 = visit(niams, "V3")
    visit_book(visit=v3, local_date=D(2026, 3, 2), local_time=dt.time(9, 0), by=coordinator)

    with pytest.raises(CalendarError) as caught:
        visit_book(visit=v3, local_date=D(2026, 3, 4), local_time=dt.time(9, 0), by=coordinator)
    moved = visit_book(
        visit=v3,
        local_date=D(2026, 3, 4),
        local_time=dt.time(9, 0),
        by=coordinator,
        reason="participant asked",
    )

    assert (
        str(caught.value) == "a reason is required: V3 is already booked, so this is a reschedule"
    )
    assert [(c.visit_code, c.old_target, c.new_target) for c in moved.calendar.visits] == [
        ("V3C", D(2026, 3, 9), D(2026, 3, 11))
    ]


def test_a_stale_edit_gets_a_conflict_and_writes_nothing(february, niams, coordinator) -> None:
    v5 = visit(niams, "V5")
    visit_book(
        visit=v5,
        local_date=D(2026, 4, 27),
        local_time=dt.time(9, 0),
        by=coordinator,
        expected_version=1,
    )

    with pytest.raises(VisitConflict) as caught:
        visit_cancel(visit=v5, by=coordinator, reason="duplicate", expected_version=1)

    assert str(caught.value) == (
        f"V5 of {niams} was changed by someone else since you opened it (it is at version 2, "
        "yours is 1); reload it and try again"
    )
    assert visit(niams, "V5").status == "booked"


def test_history_visits_cannot_be_changed_again(niams, coordinator) -> None:
    v2 = visit(niams, "V2")
    visit_record_done(visit=v2, actual_date=D(2026, 2, 2), by=coordinator)

    with pytest.raises(CalendarError) as caught:
        visit_book(
            visit=v2,
            local_date=D(2026, 2, 3),
            local_time=dt.time(9, 0),
            by=coordinator,
            reason="typo",
        )

    assert str(caught.value) == (
        f"V2 of {niams} is done; only planned or booked visits can be booked (completed, "
        "missed and cancelled visits are history)"
    )


def test_missed_visit_releases_what_counted_from_its_booking(february, niams, coordinator) -> None:
    v3 = visit(niams, "V3")
    visit_book(visit=v3, local_date=D(2026, 3, 4), local_time=dt.time(9, 0), by=coordinator)

    diff = visit_mark_missed(visit=v3, by=coordinator, reason="did not attend")

    assert [(c.visit_code, c.old_target, c.new_target) for c in diff.visits] == [
        ("V3C", D(2026, 3, 11), D(2026, 3, 9))
    ]
    assert visit(niams, "V3").status == "missed"


def test_unscheduled_visit_carries_its_reason_and_procedures(february, niams, coordinator) -> None:
    flare = visit_add_unscheduled(
        participant=niams,
        local_date=D(2026, 4, 10),
        local_time=dt.time(14, 0),
        reason="lupus flare: rash and fever",
        procedure_codes=["EXAM", "LABS"],
        by=coordinator,
    )

    assert (flare.code, flare.status, flare.booked_start, flare.unscheduled_reason) == (
        "UNSCHEDULED",
        "booked",
        dt.datetime(2026, 4, 10, 18, 0, tzinfo=dt.UTC),
        "lupus flare: rash and fever",
    )
    assert sorted(flare.procedures.values_list("procedure__code", flat=True)) == ["EXAM", "LABS"]


def test_day1_moved_after_screening_moves_its_visits_but_not_history(niams, coordinator) -> None:
    visit_record_done(visit=visit(niams, "V1"), actual_date=D(2026, 1, 14), by=coordinator)
    before = calendar(niams)

    preview = participant_anchor_change_preview(
        participant=niams, code="day1", new_date=D(2026, 2, 9)
    )
    diff = participant_anchor_change(
        participant=niams,
        code="day1",
        new_date=D(2026, 2, 9),
        by=coordinator,
        reason="infusion chair unavailable",
    )

    after = calendar(niams)
    assert preview == diff
    assert after["V1"] == before["V1"]
    assert {code: (after[code][0] - before[code][0]).days for code in after if code != "V1"} == {
        code: 7 for code in after if code != "V1"
    }
    assert [(c.milestone_code, c.old_due, c.new_due) for c in diff.milestones] == [
        ("CONTRACEPTION_END", D(2027, 1, 4), D(2027, 1, 11))
    ]


def test_withdrawal_keeps_everything_before_the_date_and_cancels_everything_after(
    niams, coordinator
) -> None:
    visit_record_done(visit=visit(niams, "V1"), actual_date=D(2026, 1, 12), by=coordinator)
    visit_record_done(visit=visit(niams, "V2"), actual_date=D(2026, 2, 2), by=coordinator)
    before = {
        v.pk: (v.target_date, v.window_start, v.window_end, v.status, v.actual_date, v.version)
        for v in ScheduledVisit.objects.filter(participant=niams)
    }

    closure = participant_withdraw(
        participant=niams, on=D(2026, 5, 1), by=coordinator, reason="moved abroad"
    )

    rows = list(ScheduledVisit.objects.filter(participant=niams).select_related("visit_definition"))
    earlier = [v for v in rows if v.target_date < D(2026, 5, 1)]
    later = [v for v in rows if v.target_date >= D(2026, 5, 1)]
    assert [v.code for v in earlier] == ["V1", "V2", "V3", "V3C", "V4", "V5"]
    assert all(
        (v.target_date, v.window_start, v.window_end, v.status, v.actual_date, v.version)
        == before[v.pk]
        for v in earlier
    )
    assert {v.code: v.status for v in later} == {
        "V6": "cancelled",
        "V7": "cancelled",
        "V8": "cancelled",
        "V9": "cancelled",
        "V10": "cancelled",
        "V11": "cancelled",
    }
    assert sorted(v.code for v in closure.cancelled_visits) == sorted(v.code for v in later)
    assert list(
        ScheduledMilestone.objects.filter(participant=niams).values_list("status", flat=True)
    ) == ["cancelled"]
    niams.refresh_from_db()
    assert (niams.status, niams.ended_on) == ("withdrawn", D(2026, 5, 1))


def test_taper_held_at_week_4_shifts_each_later_reduction_by_one_week(tsukuba, coordinator) -> None:
    preview = taper_adjust_preview(participant=tsukuba, milestone_code="PSL_TAPER", week=4)
    diff = taper_adjust(
        participant=tsukuba,
        milestone_code="PSL_TAPER",
        week=4,
        by=coordinator,
        reason="disease flare: no reduction this week",
    )

    steps = list(
        ScheduledMilestone.objects.filter(participant=tsukuba, rule__code="PSL_TAPER")
        .order_by("sequence")
        .values_list("sequence", "due_date", "dose_mg", "flag")
    )
    assert preview == diff
    assert [dose for _, _, dose, _ in steps] == [
        Decimal(d) for d in (36, 36, 31, 27, 27, 23, 20, 17, 15, 13, 11, 9, 8, 7)
    ]
    assert steps[13][1] == D(2026, 3, 2) + dt.timedelta(weeks=13)
    assert [(week, flag) for week, _, _, flag in steps if flag] == [
        (
            12,
            "above target: 8 mg/day at week 12; the protocol aims at 7.5 mg/day or less from "
            "week 12",
        )
    ]
    assert diff.milestones[-1] == MilestoneChange(
        "PSL_TAPER", 13, None, D(2026, 6, 1), None, Decimal(7), ""
    )


def test_taper_dose_set_by_the_investigator_restarts_later_steps_from_it(
    tsukuba, coordinator
) -> None:
    taper_adjust(
        participant=tsukuba,
        milestone_code="PSL_TAPER",
        week=6,
        dose_mg=Decimal(15),
        by=coordinator,
        reason="faster taper, disease quiet",
    )

    doses = list(
        ScheduledMilestone.objects.filter(participant=tsukuba, rule__code="PSL_TAPER")
        .order_by("sequence")
        .values_list("dose_mg", flat=True)
    )
    assert doses == [Decimal(d) for d in (36, 36, 31, 27, 23, 20, 15, 13, 11, 10, 9, 8, 7)]


def test_taper_never_increases_unless_the_investigator_confirms(tsukuba, coordinator) -> None:
    with pytest.raises(CalendarError) as caught:
        taper_adjust(
            participant=tsukuba,
            milestone_code="PSL_TAPER",
            week=6,
            dose_mg=Decimal(25),
            by=coordinator,
            reason="flare",
        )
    taper_adjust(
        participant=tsukuba,
        milestone_code="PSL_TAPER",
        week=6,
        dose_mg=Decimal(25),
        allow_increase=True,
        by=coordinator,
        reason="flare",
    )

    assert str(caught.value) == (
        "25 mg/day is more than week 5's 20 mg/day; a taper never increases unless the "
        "investigator confirms the increase"
    )
    week6 = ScheduledMilestone.objects.get(participant=tsukuba, rule__code="PSL_TAPER", sequence=6)
    assert (week6.dose_mg, week6.flag) == (Decimal(25), "raised by the investigator from 20 mg/day")
