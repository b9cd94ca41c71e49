"""Weight-based dose tapers (e.g. the Tsukuba prednisolone taper), in exact decimals.

The first dose is the weight-based dose capped by the protocol's ceiling, then held for the
initial weeks; from there the dose falls weekly so that it reaches the target on the target
week. Every computed dose is rounded *down* to the tablet step, which keeps it at or under every
cap, and a computed dose is never above the week before it (a rounding artefact is clamped to
the previous dose).

An investigator's decision is applied as given: a hold keeps last week's dose, a prescribed
dose is that week's dose. A prescription is a multiple of the tablet step unless the protocol
says the drug allows exact doses (`TaperSpec.exact_doses`); the services refuse any other, and
one that got through anyway (a decision recorded before that rule) is rounded down, never up.
A prescribed dose may be above last week's (an investigator's explicit increase, flagged); the
reductions then restart from it, so later computed doses may be above the dose before the
increase, but never above the prescription nor the week before them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction

from scheduler.engine.types import TaperAdjustment, TaperSpec


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def dose_ceiling(spec: TaperSpec, weight_kg: Decimal) -> Decimal:
    """The protocol's cap on any dose for this weight: mg/kg × weight, and the hard ceiling."""
    dose = weight_kg * spec.initial_mg_per_kg
    if spec.initial_max_mg is not None:
        dose = min(dose, spec.initial_max_mg)
    return dose


def initial_dose(spec: TaperSpec, weight_kg: Decimal) -> Decimal:
    return floor_to_step(dose_ceiling(spec, weight_kg), spec.step_mg)


def prescribed_dose(spec: TaperSpec, dose_mg: Decimal) -> Decimal:
    """The dose an investigator's prescription stands for: itself, rounded down to the tablet
    unless the drug allows exact doses (quantize would round half-even, i.e. sometimes up)."""
    return dose_mg if spec.exact_doses else floor_to_step(dose_mg, spec.step_mg)


def weekly_doses(spec: TaperSpec, weight_kg: Decimal) -> list[Decimal]:
    """Dose per week as the protocol plans it, index 0 = the first week, to the target week."""
    return [step.dose_mg for step in taper_steps(spec, weight_kg)]


@dataclass(frozen=True)
class TaperStep:
    week: int
    dose_mg: Decimal
    flag: str = ""


def taper_steps(
    spec: TaperSpec, weight_kg: Decimal, adjustments: dict[int, TaperAdjustment] | None = None
) -> list[TaperStep]:
    """The weekly doses once the investigator's holds and prescribed doses are applied.

    A hold keeps last week's dose and pushes every later reduction back one week (in the
    initial weeks too: the initial dose then lasts a week longer). A prescribed dose replaces
    the week's dose, and the reductions still to come restart from it so the target is still
    reached on the (possibly postponed) target week; prescribed in the initial weeks, it is
    held for the rest of them. Week 0 is the protocol's first dose. Without adjustments this
    is exactly `weekly_doses`. Doses at or after the protocol's target week that are above
    the target, and doses the investigator raised, are flagged.
    """
    adjustments = adjustments or {}
    first = initial_dose(spec, weight_kg)
    target = min(spec.target_mg, first)
    initial_left = spec.initial_weeks - 1  # initial weeks after week 0
    remaining = spec.target_week - spec.initial_weeks + 1  # weekly reductions still to come
    segment_start, segment_length, segment_done = first, remaining, 0
    last_adjusted = max(adjustments, default=-1)
    steps: list[TaperStep] = [TaperStep(0, first, _above_target(spec, 0, first, target))]
    previous = first
    week = 1
    with localcontext() as ctx:
        ctx.prec = 40
        while initial_left > 0 or remaining > 0 or week <= last_adjusted:
            adjustment = adjustments.get(week)
            flag = ""
            if adjustment is not None and adjustment.kind == "hold":
                dose = previous
            elif adjustment is not None and adjustment.dose_mg is not None:
                dose = prescribed_dose(spec, adjustment.dose_mg)
                if dose > previous:
                    flag = f"raised by the investigator from {_mg(previous)} mg/day"
                if initial_left > 0:
                    initial_left -= 1
                else:
                    remaining = max(remaining - 1, 0)
                segment_start, segment_length, segment_done = dose, remaining, 0
            elif initial_left > 0:
                initial_left -= 1
                dose = previous
            elif remaining > 0:
                segment_done += 1
                remaining -= 1
                on_step = _curve_on_step(
                    spec.shape, segment_start, target, segment_done, segment_length, spec.step_mg
                )
                dose = min(on_step, previous)
            else:
                dose = previous
            steps.append(TaperStep(week, dose, flag or _above_target(spec, week, dose, target)))
            previous = dose
            week += 1
    return steps


def _above_target(spec: TaperSpec, week: int, dose: Decimal, target: Decimal) -> str:
    if week >= spec.target_week and dose > target:
        return (
            f"above target: {_mg(dose)} mg/day at week {week}; the protocol aims at "
            f"{_mg(spec.target_mg)} mg/day or less from week {spec.target_week}"
        )
    return ""


def _curve_on_step(
    shape: str, start: Decimal, target: Decimal, done: int, length: int, step: Decimal
) -> Decimal:
    """The curve's dose after `done` of `length` reductions from `start` to `target`, rounded
    down to the tablet step, exactly: the largest multiple of the step at or under the curve.
    Computed in decimals the curve can land a hair under a whole tablet it passes through
    (27 mg · (1/9)^(1/2) is 8.999… to 40 digits, and 9 mg is the dose) and lose the tablet, so
    the step is decided in fractions: linear, start·(length − done)/length + target·done/length;
    geometric, the d with d^length = start^(length − done) · target^done."""
    if done >= length or start <= target:
        return floor_to_step(min(start, target) if done >= length else start, step)
    tablet = Fraction(step)
    if shape == "geometric" and target > 0:
        bound = Fraction(start) ** (length - done) * Fraction(target) ** done
        near = start * (target / start) ** (Decimal(done) / Decimal(length))
        tablets = int((near / step).to_integral_value(rounding=ROUND_FLOOR))
        while ((tablets + 1) * tablet) ** length <= bound:
            tablets += 1
        while tablets > 0 and (tablets * tablet) ** length > bound:
            tablets -= 1
    else:
        exact = (Fraction(start) * (length - done) + Fraction(target) * done) / length
        tablets = math.floor(exact / tablet)
    return Decimal(tablets) * step


def _mg(value: Decimal) -> str:
    return f"{value.normalize():f}"
