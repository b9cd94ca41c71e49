"""The screening log: every registered participant of the user's sites, from registration to
the outcome of screening, with the machine checks, the investigator's sign-off and the
reason of a screen failure; another site's participants never appear."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.urls import reverse

from scheduler.services import (
    participant_eligibility_confirm,
    participant_enroll,
    participant_screen_fail,
    participant_withdraw,
)
from tests.conftest import sign_in
from tests.factories import SiteFactory, member, participant_for

D = dt.date
# 15:00 UTC: 10:00 in New York, the NIAMS site's clock.
NOW = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
LOG_URL = "/admin/participants/participant/screening-log/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def sites(import_seed, django_user_model):
    version = import_seed("000")
    nih = SiteFactory.create(code="nih-cc", name="NIH CC", timezone="America/New_York")
    other = SiteFactory.create(code="other", name="Other", timezone="America/Chicago")
    investigator = django_user_model.objects.create_user("dr-lee", is_staff=True)
    member(investigator, trial=version.trial, site=nih, role="investigator")
    day1 = {"day1": D(2026, 3, 16), "consent": D(2026, 2, 20)}
    minor = participant_for(version, anchors=day1, site=nih, birth_date=D(2010, 1, 1), study_id="A")
    signed = participant_for(version, anchors=day1, site=nih, study_id="B")
    failed = participant_for(version, anchors=day1, site=nih, study_id="C")
    enrolled = participant_for(version, anchors=day1, site=nih, study_id="D")
    participant_for(version, anchors=day1, site=other, study_id="ELSEWHERE")
    participant_eligibility_confirm(participant=signed, on=D(2026, 3, 2), by=investigator)
    participant_screen_fail(
        participant=failed, on=D(2026, 3, 2), by=investigator, reason="eGFR below 30"
    )
    participant_eligibility_confirm(participant=enrolled, on=D(2026, 3, 2), by=investigator)
    participant_enroll(participant=enrolled, on=D(2026, 3, 2), by=investigator)
    return version, nih, investigator, (minor, signed, failed, enrolled)


def cells(response) -> list[list[str]]:
    from tests.scheduler.test_admin_views import tables

    return tables(response)["screening-log"]


def test_the_log_lists_each_participant_from_registration_to_outcome(client, sites) -> None:
    version, nih, investigator, (minor, signed, failed, enrolled) = sites
    sign_in(client, investigator)

    response = client.get(LOG_URL)

    registered = "Mon 2 Mar 2026 10:00 EST"
    assert response.status_code == 200
    assert cells(response) == [
        [
            "niams-ani-vascular/A",
            "NIH CC",
            registered,
            "AGE (Aged 18 to 80 years.): age 16 years is outside the required range "
            "(≥ 18 and ≤ 80)",
            "—",
            "in screening",
            "—",
            "Check eligibility and enroll Screen failed",
        ],
        [
            "niams-ani-vascular/B",
            "NIH CC",
            registered,
            "all pass",
            f"dr-lee, {registered}",
            "in screening",
            "—",
            "Check eligibility and enroll Screen failed",
        ],
        [
            "niams-ani-vascular/C",
            "NIH CC",
            registered,
            "—",
            "—",
            "screen failed on 2026-03-02",
            "eGFR below 30",
            "",
        ],
        [
            "niams-ani-vascular/D",
            "NIH CC",
            registered,
            "—",
            f"dr-lee, {registered}",
            "enrolled on 2026-03-02",
            "—",
            "",
        ],
    ]
    assert response.context["counts"] == {
        "registered": 4,
        "in_screening": 2,
        "screen_failed": 1,
        "enrolled": 1,
    }
    assert "ELSEWHERE" not in response.content.decode()


def test_a_read_only_role_reads_the_log_without_actions(client, sites, django_user_model) -> None:
    version, nih, _, _ = sites
    monitor = django_user_model.objects.create_user("monitor", is_staff=True)
    member(monitor, trial=version.trial, role="sponsor_monitor")
    sign_in(client, monitor)

    response = client.get(LOG_URL)

    assert [row[7] for row in cells(response)] == ["", "", "", "", ""]
    # The monitor reads every site of the trial: the other site's participant included.
    assert [row[0] for row in cells(response)][-1] == "niams-ani-vascular/ELSEWHERE"


def test_the_log_is_filtered_by_site_code(client, sites, django_user_model) -> None:
    version, nih, _, _ = sites
    monitor = django_user_model.objects.create_user("monitor", is_staff=True)
    member(monitor, trial=version.trial, role="sponsor_monitor")
    sign_in(client, monitor)

    response = client.get(LOG_URL, {"site": "other"})

    assert [row[0] for row in cells(response)] == ["niams-ani-vascular/ELSEWHERE"]
    assert reverse("admin:participants_participant_screening_log") == LOG_URL


def test_the_log_costs_the_same_queries_for_two_and_for_eight_in_screening(
    client, sites, import_seed
) -> None:
    """The machine checks of a page read the anchors and criteria once, not once a row, and
    still check each participant's own age."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    version, nih, investigator, _ = sites
    sign_in(client, investigator)
    day1 = {"day1": D(2026, 3, 16), "consent": D(2026, 2, 20)}

    def log_queries() -> tuple[int, list[list[str]]]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(LOG_URL)
        assert response.status_code == 200
        return len(queries), cells(response)

    few, _ = log_queries()
    for number in range(6):
        # Ages 16 to 21 on the consent date: the two youngest fail AGE (18 to 80).
        participant_for(
            version,
            anchors=day1,
            site=nih,
            birth_date=D(2010 - number, 1, 1),
            study_id=f"M{number}",
        )
    many, rows = log_queries()

    assert many == few
    checks = {row[0].split("/")[1]: row[3] for row in rows if row[0].split("/")[1][0] == "M"}
    assert checks == {
        "M0": "AGE (Aged 18 to 80 years.): age 16 years is outside the required range "
        "(≥ 18 and ≤ 80)",
        "M1": "AGE (Aged 18 to 80 years.): age 17 years is outside the required range "
        "(≥ 18 and ≤ 80)",
        "M2": "all pass",
        "M3": "all pass",
        "M4": "all pass",
        "M5": "all pass",
    }


def test_the_outcome_gives_the_enrollments_day_not_when_it_was_recorded(client, sites) -> None:
    """Recorded on 2 March, catching up: the enrollment took place on 27 February."""
    version, nih, investigator, _ = sites
    late = participant_for(
        version,
        anchors={"day1": D(2026, 3, 16), "consent": D(2026, 2, 20)},
        site=nih,
        study_id="E",
    )
    participant_eligibility_confirm(participant=late, on=D(2026, 2, 27), by=investigator)
    participant_enroll(participant=late, on=D(2026, 2, 27), by=investigator)
    participant_withdraw(participant=late, on=D(2026, 3, 2), by=investigator, reason="moved away")
    sign_in(client, investigator)

    row = [row for row in cells(client.get(LOG_URL)) if row[0].endswith("/E")][0]

    assert row[5] == "enrolled on 2026-02-27; Withdrawn on 2026-03-02"
