"""Machine-checkable eligibility criteria (age and weight ranges). Pure: no Django."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class RangeCheck:
    code: str
    kind: str  # inclusion | exclusion
    text: str
    attribute: str  # age_years | weight_kg
    min: Decimal | None
    max: Decimal | None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'≥' if self.min_inclusive else '>'} {_plain(self.min)}")
        if self.max is not None:
            parts.append(f"{'≤' if self.max_inclusive else '<'} {_plain(self.max)}")
        return " and ".join(parts)

    def holds(self, value: Decimal) -> bool:
        if self.min is not None and (
            value < self.min or (value == self.min and not self.min_inclusive)
        ):
            return False
        return not (
            self.max is not None
            and (value > self.max or (value == self.max and not self.max_inclusive))
        )


def _plain(value: Decimal) -> str:
    """18.00 -> '18', 7.50 -> '7.5' (as the protocol wrote it)."""
    return f"{value.normalize():f}"


@dataclass(frozen=True)
class EligibilityFailure:
    """A criterion failed: `message` in English; the fields after it let a face word it in
    its reader's language (problem: "missing", "outside" or "excluded")."""

    code: str
    text: str
    message: str
    problem: str = ""
    attribute: str = ""
    value: Decimal | None = None
    range: str = ""

    def __str__(self) -> str:
        return f"{self.code} ({self.text}): {self.message}"


UNITS = {"age_years": "years", "weight_kg": "kg"}
LABELS = {"age_years": "age", "weight_kg": "weight"}


def age_in_years(birth_date: dt.date, on: dt.date) -> int:
    # Completed years. Someone born on 29 February has their birthday on 1 March in common
    # years, since (2, 28) < (2, 29): the conservative reading for an age limit.
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def check_eligibility(
    checks: Iterable[RangeCheck], attributes: dict[str, Decimal | None]
) -> list[EligibilityFailure]:
    """Every machine-checkable criterion the participant fails, in protocol order.

    An inclusion range must hold; an exclusion range must not. A value the check needs but the
    participant lacks is a failure too: eligibility is never assumed.
    """
    failures = []
    for check in checks:
        value = attributes.get(check.attribute)
        label, unit = LABELS[check.attribute], UNITS[check.attribute]
        if value is None:
            failures.append(
                EligibilityFailure(
                    check.code,
                    check.text,
                    f"{label} is not recorded",
                    "missing",
                    check.attribute,
                )
            )
            continue
        inside = check.holds(value)
        if check.kind == "inclusion" and not inside:
            failures.append(
                EligibilityFailure(
                    check.code,
                    check.text,
                    f"{label} {value} {unit} is outside the required range ({check.describe()})",
                    "outside",
                    check.attribute,
                    value,
                    check.describe(),
                )
            )
        elif check.kind == "exclusion" and inside:
            failures.append(
                EligibilityFailure(
                    check.code,
                    check.text,
                    f"{label} {value} {unit} is in the excluded range ({check.describe()})",
                    "excluded",
                    check.attribute,
                    value,
                    check.describe(),
                )
            )
    return failures
