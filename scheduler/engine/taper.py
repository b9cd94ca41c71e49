"""Weight-based dose tapers (e.g. the Tsukuba prednisolone taper), in exact decimals.

The first dose is the weight-based dose capped by the protocol's ceiling, then held for the
initial weeks; from there the dose falls weekly so that it reaches the target on the target
week. Every dose is rounded *down* to the tablet step, which keeps it at or under every cap,
and the sequence never increases (a rounding artefact is clamped to the previous dose).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext

from scheduler.engine.types import TaperAdjustment, TaperSpec


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def initial_dose(spec: TaperSpec, weight_kg: Decimal) -> Decimal:
    dose = weight_kg * spec.initial_mg_per_kg
    if spec.initial_max_mg is not None:
        dose = min(dose, spec.initial_max_mg)
    return floor_to_step(dose, spec.step_mg)


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

    A hold keeps last week's dose and pushes every later reduction back one week. A prescribed
    dose replaces the week's dose, and the reductions still to come restart from it so the
    target is still reached on the (possibly postponed) target week. Without adjustments this
    is exactly `weekly_doses`. Doses at or after the protocol's target week that are above
    the target, and doses the investigator raised, are flagged.
    """
    adjustments = adjustments or {}
    first = initial_dose(spec, weight_kg)
    target = min(spec.target_mg, first)
    remaining = spec.target_week - spec.initial_weeks + 1  # weekly reductions still to come
    segment_start, segment_length, segment_done = first, remaining, 0
    last_adjusted = max(adjustments, default=-1)
    steps: list[TaperStep] = []
    previous = first
    week = 0
    with localcontext() as ctx:
        ctx.prec = 40
        while week < spec.initial_weeks or remaining > 0 or week <= last_adjusted:
            adjustment = adjustments.get(week) if week >= spec.initial_weeks else None
            flag = ""
            if week < spec.initial_weeks:
                dose = first
            elif adjustment is not None and adjustment.kind == "hold":
                dose = previous
            elif adjustment is not None and adjustment.dose_mg is not None:
                dose = adjustment.dose_mg
                if dose > previous:
                    flag = f"raised by the investigator from {_mg(previous)} mg/day"
                remaining = max(remaining - 1, 0)
                segment_start, segment_length, segment_done = dose, remaining, 0
            elif remaining > 0:
                segment_done += 1
                remaining -= 1
                exact = _curve(spec.shape, segment_start, target, segment_done, segment_length)
                dose = min(floor_to_step(exact, spec.step_mg), previous)
            else:
                dose = previous
            if week >= spec.target_week and dose > target and not flag:
                flag = (
                    f"above target: {_mg(dose)} mg/day at week {week}; the protocol aims at "
                    f"{_mg(spec.target_mg)} mg/day or less from week {spec.target_week}"
                )
            steps.append(TaperStep(week, dose.quantize(spec.step_mg), flag))
            previous = dose
            week += 1
    return steps


def _curve(shape: str, start: Decimal, target: Decimal, done: int, length: int) -> Decimal:
    if done >= length or start <= target:
        return min(start, target) if done >= length else start
    fraction = Decimal(done) / Decimal(length)
    if shape == "geometric" and target > 0:
        return start * (target / start) ** fraction
    return start - (start - target) * fraction


def _mg(value: Decimal) -> str:
    return f"{value.normalize():f}"
