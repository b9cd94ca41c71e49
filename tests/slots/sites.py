"""Site calendars and visit plans the slot tests share (plain data, no database)."""

from __future__ import annotations

import datetime as dt

from scheduler.engine.slots import (
    Hours,
    Need,
    Resource,
    SiteCalendar,
    StaffShift,
    Step,
    VisitPlan,
)
from scheduler.sitecalendar import closures_between

T = dt.time
WEEKDAYS = range(5)
NEW_YORK = "America/New_York"
TOKYO = "Asia/Tokyo"
SCANNER = "PET/CT scanner"
CHAIR = "infusion chair"
CAVI = "CAVI device"
NURSE = "infusion nurse"


def weekdays(start: dt.time, end: dt.time) -> tuple[Hours, ...]:
    return tuple(Hours(day, start, end) for day in WEEKDAYS)


def niams_site(*, years: range = range(2026, 2028)) -> SiteCalendar:
    """NIH Clinical Center (Bethesda): open 07:30-17:30 on weekdays, closed on US federal
    holidays; 1 PET/CT scanner 08:00-16:00, 4 infusion chairs, 1 CAVI device."""
    first, last = dt.date(years.start, 1, 1), dt.date(years.stop - 1, 12, 31)
    return SiteCalendar(
        timezone=NEW_YORK,
        hours=weekdays(T(7, 30), T(17, 30)),
        closures=closures_between("US", first, last),
        resources=(
            Resource(SCANNER, "PET/CT 1", hours=weekdays(T(8), T(16))),
            *(Resource(CHAIR, f"Chair {n}") for n in range(1, 5)),
            Resource(CAVI, "CAVI 1"),
        ),
    )


def tsukuba_site() -> SiteCalendar:
    """University of Tsukuba Hospital: weekdays 08:30-17:00, closed on Japanese public
    holidays; 4 infusion chairs."""
    return SiteCalendar(
        timezone=TOKYO,
        hours=weekdays(T(8, 30), T(17)),
        closures=closures_between("JP", dt.date(2026, 1, 1), dt.date(2027, 12, 31)),
        resources=tuple(Resource(CHAIR, f"チェア{n}") for n in range(1, 5)),
    )


# NIAMS week-0 / week-32 visit, laid out to fit the seed's "up to 4 hours" (240 minutes):
# fasting blood first, then the FDG-PET/CT while still fasting (110 min on the table), CAVI
# (20 min lying still) before the infusion, the exam and the questionnaire during the
# infusion's 60-minute observation.
NIAMS_PET_VISIT = VisitPlan(
    visit="V2 (Treatment visit 1, week 0)",
    steps=(
        Step("LABS", 15),
        Step("FDGPET", 110, resources=(Need(SCANNER),)),
        Step("CAVI", 20, resources=(Need(CAVI),)),
        Step("INFUSION", 90, resources=(Need(CHAIR),)),
        Step("EXAM", 30, relation="with"),
        Step("SLEQ", 20),
    ),
    max_minutes=240,
)

# The same procedures one after another, as the protocol file lists them today: 285 minutes.
NIAMS_SEQUENTIAL = VisitPlan(
    visit="V2",
    steps=(
        Step("EXAM", 30),
        Step("LABS", 15),
        Step("SLEQ", 20),
        Step("CAVI", 20, resources=(Need(CAVI),)),
        Step("FDGPET", 110, resources=(Need(SCANNER),)),
        Step("INFUSION", 90, resources=(Need(CHAIR),)),
    ),
    max_minutes=240,
)

# A Tsukuba infusion visit: 30-minute infusion in a chair, then assessments (120 minutes).
TSUKUBA_INFUSION = VisitPlan(
    visit="INF",
    steps=(
        Step("INFUSION", 30, resources=(Need(CHAIR),)),
        Step("LLDAS", 15),
        Step("SLEDAI", 15),
        Step("COMPLEMENT", 10),
    ),
    max_minutes=120,
)

NURSED_INFUSION = VisitPlan(
    visit="INF",
    steps=(Step("INFUSION", 60, resources=(Need(CHAIR),), staff=(Need(NURSE),)),),
    max_minutes=60,
)


def nurse_shifts(per_nurse: int, nurses: int) -> tuple[StaffShift, ...]:
    return tuple(StaffShift(NURSE, day, T(8), T(16), count=per_nurse * nurses) for day in WEEKDAYS)
