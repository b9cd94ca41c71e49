"""Weight-based dose tapers (e.g. the Tsukuba prednisolone taper), in exact decimals.

The first dose is the weight-based dose capped by the protocol's ceiling, then held for the
initial weeks; from there the dose falls weekly so that it reaches the target on the target
week. Every dose is rounded *down* to the tablet step, which keeps it at or under every cap,
and the sequence never increases (a rounding artefact is clamped to the previous dose).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, localcontext

from scheduler.engine.types import TaperSpec


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def initial_dose(spec: TaperSpec, weight_kg: Decimal) -> Decimal:
    dose = weight_kg * spec.initial_mg_per_kg
    if spec.initial_max_mg is not None:
        dose = min(dose, spec.initial_max_mg)
    return floor_to_step(dose, spec.step_mg)


def weekly_doses(
    spec: TaperSpec, weight_kg: Decimal, start_dose: Decimal | None = None
) -> list[Decimal]:
    """Dose per week, index 0 = the first week, up to and including the target week."""
    first = initial_dose(spec, weight_kg) if start_dose is None else start_dose
    target = min(spec.target_mg, first)
    reductions = spec.target_week - spec.initial_weeks + 1
    doses: list[Decimal] = []
    with localcontext() as ctx:
        ctx.prec = 40
        for week in range(spec.target_week + 1):
            if week < spec.initial_weeks or first == 0:
                dose = first
            else:
                fraction = Decimal(week - spec.initial_weeks + 1) / Decimal(reductions)
                if week >= spec.target_week:
                    exact = target
                elif spec.shape == "geometric" and target > 0:
                    # A constant percentage each week: large steps at high doses, small ones
                    # near the target, as steroid tapers are usually written.
                    exact = first * (target / first) ** fraction
                else:
                    exact = first - (first - target) * fraction
                dose = floor_to_step(exact, spec.step_mg)
            if doses:
                dose = min(dose, doses[-1])
            doses.append(dose.quantize(spec.step_mg))
    return doses
