"""Protocol amendments, and the audit trail every calendar service leaves."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from participants.models import Participant, ParticipantAnchor, TreatmentAssignment
from participants.services import participant_register
from scheduler.calendar import VisitChange
from scheduler.models import (
    ScheduledMilestone,
    ScheduledProcedure,
    ScheduledVisit,
    TaperAdjustment,
)
from scheduler.services import (
    CalendarError,
    participant_anchor_change,
    participant_complete,
    participant_enroll,
    participant_move_to_version,
    participant_move_to_version_preview,
    participant_withdraw,
    site_move_to_version,
    taper_adjust,
    visit_add_unscheduled,
    visit_book,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
)
from tests.conftest import seed_path
from tests.factories import SiteFactory, participant_for
from tests.scheduler.clocks import on_the_eve
from trials.models import ProcedureDefinition, ProtocolVersion, TrialSite
from trials.services import protocol_import

D = dt.date
NOW = dt.datetime(2026, 12, 31, 12, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db

W28 = """\
  - code: W28
    name: Week 28 assessment
    epoch: POST
    anchor: day1
    offset_days: 196
    window: {before: 3, after: 3}
    duration_minutes: 60
    procedures: [LLDAS, SLEDAI]
milestones:
"""


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def coordinator(django_user_model):
    return django_user_model.objects.create_user("coordinator", password="a-long-passphrase")


def tsukuba_amendment() -> ProtocolVersion:
    text = seed_path("001").read_text(encoding="utf-8")
    amended = text.replace('label: "1.0"', 'label: "1.1"').replace("milestones:\n", W28, 1)
    return protocol_import(text=amended, source="tsukuba-1.1.yaml")


def enrolled(version: ProtocolVersion, site, study_id: str, **fields) -> Participant:
    participant = participant_for(
        version,
        anchors={"psl_start": D(2026, 3, 2), "day1": D(2026, 3, 16)},
        weight_kg=Decimal(60),
        birth_date=D(1980, 6, 15),
        site=site,
        study_id=study_id,
        **fields,
    )
    participant_enroll(participant=participant, on=D(2026, 3, 1))
    return participant


def inf(participant: Participant, occurrence: int) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code="INF", occurrence=occurrence
    )


def test_amendment_adds_week_28_only_for_active_participants_as_previewed(
    import_seed, coordinator
) -> None:
    v10 = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo")
    active = enrolled(v10, site, "T-001")
    completed = enrolled(v10, site, "T-002")
    withdrawn = enrolled(v10, site, "T-003")
    visit_record_done(visit=inf(active, 1), actual_date=D(2026, 3, 16), by=coordinator)
    for occurrence in range(1, 8):
        visit_cancel(visit=inf(completed, occurrence), by=coordinator, reason="test")
    participant_complete(participant=completed, on=D(2026, 9, 1), by=coordinator)
    participant_withdraw(participant=withdrawn, on=D(2026, 4, 1), by=coordinator, reason="moved")
    v11 = tsukuba_amendment()

    preview = participant_move_to_version_preview(participant=active, version=v11, on=D(2026, 4, 1))
    moved = site_move_to_version(
        site=site,
        version=v11,
        approved_on=D(2026, 4, 1),
        on=D(2026, 4, 1),
        by=coordinator,
        reason="amendment 1",
    )

    assert moved == {"T-001": preview}
    assert [c for c in preview.visits if c.kind == "added"] == [
        VisitChange(
            "W28", 1, None, None, D(2026, 9, 28), (D(2026, 9, 25), D(2026, 10, 1)), None, "", "1.1"
        )
    ]
    assert sorted((c.visit_code, c.occurrence, c.kind) for c in preview.visits) == [
        ("INF", n, "changed") for n in range(2, 8)
    ] + [("W28", 1, "added")]
    assert list(
        ScheduledVisit.objects.filter(participant=active)
        .order_by("target_date")
        .values_list("visit_definition__code", "occurrence", "protocol_version__label", "status")
    ) == [("INF", 1, "1.0", "done")] + [("INF", n, "1.1", "planned") for n in range(2, 8)] + [
        ("W28", 1, "1.1", "planned")
    ]
    for participant in (completed, withdrawn):
        assert not ScheduledVisit.objects.filter(
            participant=participant, visit_definition__code="W28"
        ).exists()
        assert set(
            ScheduledVisit.objects.filter(participant=participant).values_list(
                "protocol_version__label", flat=True
            )
        ) == {"1.0"}
    assert Participant.objects.get(pk=active.pk).protocol_version == v11
    assert TrialSite.objects.get(site=site).protocol_version == v11
    newcomer = participant_register(
        trial=v10.trial,
        site=site,
        study_id="T-004",
        birth_date=D(1980, 6, 15),
        anchors={"psl_start": D(2026, 5, 4)},
        weight_kg=Decimal(60),
    )
    assert newcomer.protocol_version == v11  # the site now registers on its approved version


def test_amendment_cannot_be_applied_before_the_site_approved_it(import_seed, coordinator) -> None:
    v10 = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo")
    enrolled(v10, site, "T-001")
    v11 = tsukuba_amendment()

    with pytest.raises(CalendarError) as caught:
        site_move_to_version(
            site=site,
            version=v11,
            approved_on=D(2026, 4, 1),
            on=D(2026, 3, 31),
            by=coordinator,
            reason="amendment 1",
        )

    assert str(caught.value) == (
        f"{site} approved tsukuba-early-ani v1.1 on 2026-04-01; participants cannot be moved "
        "onto it on 2026-03-31, before that date"
    )
    assert ScheduledVisit.objects.filter(protocol_version=v11).count() == 0


def test_completed_and_withdrawn_participants_are_never_moved(import_seed, coordinator) -> None:
    v10 = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo")
    withdrawn = enrolled(v10, site, "T-003")
    participant_withdraw(participant=withdrawn, on=D(2026, 4, 1), by=coordinator, reason="moved")
    v11 = tsukuba_amendment()

    with pytest.raises(CalendarError) as caught:
        participant_move_to_version(
            participant=withdrawn,
            version=v11,
            on=D(2026, 4, 1),
            by=coordinator,
            reason="amendment 1",
        )

    assert str(caught.value) == f"{withdrawn} is withdrawn: the calendar is closed"


# ----------------------------------------------------------------------------------------
# The audit trail

AUDITED = (
    Participant,
    ParticipantAnchor,
    TreatmentAssignment,
    ScheduledVisit,
    ScheduledProcedure,
    ScheduledMilestone,
    TaperAdjustment,
    TrialSite,
)


class AuditProbe:
    """New history rows per audited model since the probe was taken."""

    def __init__(self) -> None:
        self.marks = {
            model: (
                model.history.order_by("-history_id").values_list("history_id", flat=True).first()
                or 0
            )
            for model in AUDITED
        }

    def entries(self) -> dict[str, list[tuple[int, str, str]]]:
        found: dict[str, list[tuple[int, str, str]]] = {}
        for model, mark in self.marks.items():
            rows = list(
                model.history.filter(history_id__gt=mark)
                .select_related("history_user")
                .order_by("id")
            )
            if rows:
                found[model.__name__] = [
                    (
                        row.id,
                        row.history_user.username if row.history_user else "",
                        row.history_change_reason or "",
                    )
                    for row in rows
                ]
        return found


def assert_one_entry_per_record_by(entries, user: str) -> None:
    for model, rows in entries.items():
        ids = [row_id for row_id, _, _ in rows]
        assert len(ids) == len(set(ids)), f"{model}: more than one entry for a record: {rows}"
        assert {who for _, who, _ in rows} == {user}, f"{model}: {rows}"
        assert all(reason for _, _, reason in rows), f"{model}: entry without a reason: {rows}"


def niams_participant(import_seed, coordinator) -> Participant:
    participant = participant_for(
        import_seed("000"), anchors={"day1": D(2026, 2, 2)}, birth_date=D(1980, 6, 15)
    )
    participant_enroll(participant=participant, on=D(2026, 1, 5), by=coordinator)
    return participant


def visit_of(participant: Participant, code: str) -> ScheduledVisit:
    return ScheduledVisit.objects.select_related("visit_definition").get(
        participant=participant, visit_definition__code=code
    )


def test_each_visit_service_writes_one_audit_entry_per_changed_record(
    import_seed, coordinator
) -> None:
    participant = niams_participant(import_seed, coordinator)
    v3, v3c = visit_of(participant, "V3"), visit_of(participant, "V3C")
    v3_procedures = sorted(ScheduledProcedure.objects.filter(visit=v3).values_list("id", flat=True))

    probe = AuditProbe()
    with on_the_eve(D(2026, 3, 4)):
        visit_book(visit=v3, local_date=D(2026, 3, 4), local_time=dt.time(9), by=coordinator)
    booked = probe.entries()
    probe = AuditProbe()
    visit_record_done(visit=v3, actual_date=D(2026, 3, 7), by=coordinator, reason="late bus")
    done = probe.entries()
    probe = AuditProbe()
    visit_mark_missed(visit=visit_of(participant, "V4"), by=coordinator, reason="no show")
    missed = probe.entries()

    assert {model: [row[0] for row in rows] for model, rows in booked.items()} == {
        "ScheduledVisit": sorted([v3.id, v3c.id])
    }
    assert booked["ScheduledVisit"] == [
        (v3.id, "coordinator", "booked"),
        (v3c.id, "coordinator", "V3 booked"),
    ]
    assert {model: [row[0] for row in rows] for model, rows in done.items()} == {
        "ScheduledVisit": sorted([v3.id, v3c.id]),
        "ScheduledProcedure": v3_procedures,
    }
    assert done["ScheduledVisit"][0] == (v3.id, "coordinator", "late bus")
    assert missed == {
        "ScheduledVisit": [(visit_of(participant, "V4").id, "coordinator", "no show")]
    }
    for entries in (booked, done, missed):
        assert_one_entry_per_record_by(entries, "coordinator")


def test_participant_and_taper_services_write_one_audit_entry_per_changed_record(
    import_seed, coordinator
) -> None:
    v10 = import_seed("001")
    site = SiteFactory.create(code="tsukuba", timezone="Asia/Tokyo")
    participant = enrolled(v10, site, "T-001")
    calls = [
        lambda: taper_adjust(
            participant=participant,
            milestone_code="PSL_TAPER",
            week=4,
            by=coordinator,
            reason="flare",
        ),
        lambda: participant_anchor_change(
            participant=participant,
            code="day1",
            new_date=D(2026, 3, 12),
            by=coordinator,
            reason="earlier infusion slot",
        ),
        lambda: visit_add_unscheduled(
            participant=participant,
            local_date=D(2026, 4, 2),
            reason="flare",
            procedure_codes=["SLEDAI"],
            by=coordinator,
        ),
        lambda: site_move_to_version(
            site=site,
            version=tsukuba_amendment(),
            approved_on=D(2026, 4, 1),
            on=D(2026, 4, 1),
            by=coordinator,
            reason="amendment 1",
        ),
        lambda: participant_withdraw(
            participant=participant, on=D(2026, 6, 1), by=coordinator, reason="moved abroad"
        ),
    ]
    changed_models = []
    for call in calls:
        probe = AuditProbe()
        call()
        entries = probe.entries()
        assert_one_entry_per_record_by(entries, "coordinator")
        changed_models.append(sorted(entries))

    assert changed_models == [
        ["ScheduledMilestone", "TaperAdjustment"],
        ["ParticipantAnchor", "ScheduledMilestone", "ScheduledVisit"],
        ["ScheduledProcedure", "ScheduledVisit"],
        ["Participant", "ScheduledMilestone", "ScheduledProcedure", "ScheduledVisit", "TrialSite"],
        ["Participant", "ScheduledMilestone", "ScheduledVisit"],
    ]


def test_audit_entries_keep_old_and_new_values(import_seed, coordinator) -> None:
    participant = niams_participant(import_seed, coordinator)
    v3 = visit_of(participant, "V3")
    visit_record_done(visit=v3, actual_date=D(2026, 3, 7), by=coordinator, reason="late bus")

    newest, previous = visit_of(participant, "V3C").history.order_by("-history_id")[:2]
    delta = newest.diff_against(previous)

    assert sorted((c.field, c.old, c.new) for c in delta.changes) == [
        ("ical_sequence", 0, 1),
        ("target_date", D(2026, 3, 9), D(2026, 3, 14)),
        ("version", 1, 2),
        ("window_end", D(2026, 3, 11), D(2026, 3, 16)),
        ("window_start", D(2026, 3, 7), D(2026, 3, 12)),
    ]
    assert (newest.history_user.username, newest.history_change_reason) == (
        "coordinator",
        "V3 done on 2026-03-07",
    )


# ----------------------------------------------------------------------------------------
# History is never rewritten, whatever happens next.

VISITS = ["V1", "V2", "V3", "V3C", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11"]
events = st.lists(
    st.one_of(
        st.tuples(st.just("done"), st.sampled_from(VISITS), st.integers(-6, 6)),
        st.tuples(st.just("book"), st.sampled_from(VISITS), st.integers(-6, 6)),
        st.tuples(st.sampled_from(["missed", "cancel"]), st.sampled_from(VISITS), st.just(0)),
        st.tuples(st.just("day1"), st.just(""), st.integers(-10, 10)),
        st.tuples(st.just("withdraw"), st.just(""), st.integers(0, 300)),
        st.tuples(st.just("amend"), st.just(""), st.integers(0, 300)),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=events)
def test_completed_visits_never_change_under_any_event_sequence(
    import_seed, coordinator, sequence
) -> None:
    text = seed_path("000").read_text(encoding="utf-8")
    with transaction.atomic():
        import_seed("000")
        amendment = protocol_import(
            text=text.replace('label: "1.0"', 'label: "1.1"'), source="niams-1.1.yaml"
        )
        participant = participant_for(
            ProtocolVersion.objects.get(trial__code="niams-ani-vascular", label="1.0"),
            anchors={"day1": D(2026, 2, 2)},
            birth_date=D(1980, 6, 15),
        )
        participant_enroll(participant=participant, on=D(2026, 1, 5))
        frozen: dict[int, tuple] = {}
        for kind, code, shift in sequence:
            try:
                with transaction.atomic():
                    _apply(kind, code, shift, participant, amendment, coordinator)
            except CalendarError:
                pass
            for row in ScheduledVisit.objects.filter(participant=participant):
                state = (
                    row.target_date,
                    row.window_start,
                    row.window_end,
                    row.status,
                    row.actual_date,
                    row.protocol_version_id,
                    row.version,
                )
                if row.id in frozen:
                    assert state == frozen[row.id], (kind, code, shift)
                elif row.status == "done":
                    frozen[row.id] = state
        transaction.set_rollback(True)


def _apply(kind, code, shift, participant, amendment, by) -> None:
    day1 = D(2026, 2, 2)
    if kind in {"done", "book", "missed", "cancel"}:
        target = visit_of(participant, code)
        day = target.target_date + dt.timedelta(days=shift)
        if kind == "done":
            visit_record_done(visit=target, actual_date=day, by=by, reason="event")
        elif kind == "book":
            # Booked before its day (a booking in the past is refused, see test_booking_rules).
            with on_the_eve(day):
                visit_book(
                    visit=target, local_date=day, local_time=dt.time(9), by=by, reason="event"
                )
        elif kind == "missed":
            visit_mark_missed(visit=target, by=by, reason="event")
        else:
            visit_cancel(visit=target, by=by, reason="event")
    elif kind == "day1":
        participant_anchor_change(
            participant=participant,
            code="day1",
            new_date=day1 + dt.timedelta(days=shift),
            by=by,
            reason="event",
        )
    elif kind == "withdraw":
        participant_withdraw(
            participant=participant, on=day1 + dt.timedelta(days=shift), by=by, reason="event"
        )
    else:
        participant_move_to_version(
            participant=participant,
            version=amendment,
            on=day1 + dt.timedelta(days=shift),
            by=by,
            reason="event",
        )


def _calendar_state(participant: Participant) -> dict[str, object]:
    """Everything an amendment writes for a participant, without ids and stamps."""
    return {
        "version": Participant.objects.get(pk=participant.pk).protocol_version.label,
        "visits": list(
            ScheduledVisit.objects.filter(participant=participant)
            .order_by("target_date", "visit_definition__code", "occurrence")
            .values_list(
                "visit_definition__code",
                "occurrence",
                "protocol_version__label",
                "status",
                "target_date",
                "window_start",
                "window_end",
                "version",
                "ical_sequence",
            )
        ),
        "procedures": sorted(
            ScheduledProcedure.objects.filter(visit__participant=participant).values_list(
                "visit__visit_definition__code",
                "visit__occurrence",
                "procedure__code",
                "procedure__version__label",
            )
        ),
        "milestones": list(
            ScheduledMilestone.objects.filter(participant=participant)
            .order_by("rule__code", "sequence")
            .values_list(
                "rule__code", "sequence", "status", "due_date", "dose_mg", "rule__version__label"
            )
        ),
        "history": sorted(
            ScheduledVisit.history.filter(participant_id=participant.pk)
            .values_list(
                "visit_definition_id", "occurrence", "history_type", "history_change_reason"
            )
            .exclude(history_type="+")
        ),
        "reminders": sorted(
            participant.reminders.exclude(status="cancelled").values_list(
                "visit__visit_definition__code",
                "visit__occurrence",
                "milestone__rule__code",
                "milestone__sequence",
                "rule_code",
                "channel",
                "due_at",
            ),
            key=repr,
        ),
    }


@pytest.fixture
def in_march():
    """Before the visits, so that they have reminders still to come."""
    with time_machine.travel(dt.datetime(2026, 3, 20, tzinfo=dt.UTC), tick=False):
        yield


def test_a_site_moved_in_chunks_ends_as_each_participant_moved_alone(
    import_seed, coordinator, monkeypatch, in_march
) -> None:
    """Five participants at a site, moved by the site's approval two at a time, against the
    same five at another site moved one by one: the same calendars, history and reminders."""
    import scheduler.services

    v10 = import_seed("001")
    chunked, alone = (SiteFactory.create(timezone=zone) for zone in ("Asia/Tokyo", "Asia/Tokyo"))
    pairs = []
    for n in range(5):
        pair = [
            enrolled(v10, site, f"{site.code}-{n}", email=f"p{n}@example.org")
            for site in (chunked, alone)
        ]
        if n == 1:  # one with a visit done, one with one booked: kept, and re-planned around
            for participant in pair:
                visit_record_done(
                    visit=inf(participant, 1), actual_date=D(2026, 3, 17), by=coordinator
                )
        if n == 3:
            for participant in pair:
                target = inf(participant, 3)
                visit_book(
                    visit=target,
                    local_date=target.target_date,
                    local_time=dt.time(10),
                    by=coordinator,
                )
        pairs.append(pair)
    v11 = tsukuba_amendment()
    monkeypatch.setattr(scheduler.services, "SITE_MOVE_CHUNK", 2)

    moved = site_move_to_version(
        site=chunked,
        version=v11,
        approved_on=D(2026, 4, 1),
        on=D(2026, 4, 1),
        by=coordinator,
        reason="a1",
    )
    one_by_one = {
        participant.study_id: participant_move_to_version(
            participant=participant, version=v11, on=D(2026, 4, 1), by=coordinator, reason="a1"
        )
        for _, participant in pairs
    }

    assert len(moved) == 5
    assert len(_calendar_state(pairs[0][0])["reminders"]) > 10  # type: ignore[arg-type]
    for mine, theirs in pairs:
        assert moved[mine.study_id] == one_by_one[theirs.study_id]
        assert moved[mine.study_id]  # something changed: W28 added, INF re-pointed
        assert _calendar_state(mine) == _calendar_state(theirs)


def test_a_procedure_an_amendment_drops_goes_with_its_history_in_the_same_queries_for_any_site(
    import_seed, coordinator, in_march
) -> None:
    """Version 1.1 no longer takes the research sample (IFNSIG) at infusions 1, 4 and 7. Moving
    a site deletes it from every open visit from the approval date on, each with a "deleted"
    history row naming the amendment and the coordinator; the visit before that date keeps
    it. One participant or three, the move runs the same statements (the first site moved
    reads the version's plan, which the others share)."""
    v10 = import_seed("001")
    first, small, large = SiteFactory.create(), SiteFactory.create(), SiteFactory.create()
    people = {
        site: [enrolled(v10, site, f"{site.code}-{n}") for n in range(count)]
        for site, count in ((first, 1), (small, 1), (large, 3))
    }
    text = seed_path("001").read_text(encoding="utf-8")
    line = "      - {procedure: IFNSIG, occurrences: [1, 4, 7]}\n"
    assert line in text
    v11 = protocol_import(
        text=text.replace('label: "1.0"', 'label: "1.1"').replace(line, ""),
        source="tsukuba-1.1-no-ifnsig.yaml",
    )

    statements = {}
    for site in (first, small, large):
        with CaptureQueriesContext(connection) as queries:
            site_move_to_version(
                site=site,
                version=v11,
                approved_on=D(2026, 4, 1),
                on=D(2026, 4, 1),
                by=coordinator,
                reason="a2",
            )
        statements[site] = len(queries.captured_queries)
    assert statements[small] == statements[large]

    for participant in [person for site in people.values() for person in site]:
        sampled = ScheduledProcedure.objects.filter(
            visit__participant=participant, procedure__code="IFNSIG"
        )
        assert list(sampled.values_list("visit__occurrence", "procedure__version__label")) == [
            (1, "1.0")
        ]
        gone = ScheduledProcedure.history.filter(
            visit_id__in=ScheduledVisit.objects.filter(participant=participant).values("pk"),
            history_type="-",
        )
        assert sorted(
            (
                ScheduledVisit.objects.get(pk=row.visit_id).occurrence,
                row.procedure_id,
                row.history_change_reason,
                row.history_user_id,
            )
            for row in gone
        ) == [
            (
                occurrence,
                ProcedureDefinition.objects.get(version=v10, code="IFNSIG").pk,
                "moved to " + str(v11) + ": a2",
                coordinator.pk,
            )
            for occurrence in (4, 7)
        ]
        # What stays of infusion 4 follows 1.1.
        assert sorted(
            ScheduledProcedure.objects.filter(
                visit__participant=participant, visit__occurrence=4
            ).values_list("procedure__code", "procedure__version__label")
        ) == [(code, "1.1") for code in ("COMPLEMENT", "INFUSION", "LLDAS", "SLEDAI")]
