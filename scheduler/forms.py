"""Forms of the admin's calendar actions: they parse what a coordinator typed, nothing more.

Every rule about whether a change is allowed (windows, reasons, history, versions) lives in the
services; a form only turns the posted strings into dates, times, codes and decimals. The same
form is posted three times: to preview, to go back and edit, and to confirm, with `version`
carrying the visit version the coordinator was shown so a stale page gets a conflict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils.translation import gettext_lazy as _

from scheduler.models import ScheduledProcedure
from trials.models import (
    Anchor,
    MilestoneRule,
    ProcedureDefinition,
    ProtocolVersion,
    localized_name,
)
from trials.protocol_file import EARLIEST_DATE, LATEST_DATE

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

REASON_WIDGET = forms.Textarea(attrs={"rows": 2, "cols": 60})
# As the API's reasons (scheduler/api/views.py).
REASON_MAX_LENGTH = 2000


def date_bounds() -> list[MinValueValidator | MaxValueValidator]:
    """The dates any form accepts, as the API does (1900 to 2200): wide for any trial, and
    nothing computed from them (windows, time zones, taper weeks) leaves Python's calendar."""
    return [
        MinValueValidator(EARLIEST_DATE, message=_("Enter a date on or after %(limit_value)s.")),
        MaxValueValidator(LATEST_DATE, message=_("Enter a date on or before %(limit_value)s.")),
    ]


def date_field(label: StrOrPromise, **kwargs: Any) -> forms.DateField:
    validators = [*kwargs.pop("validators", []), *date_bounds()]
    return forms.DateField(
        label=label,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        validators=validators,
        **kwargs,
    )


def _whole_minute(value: dt.time) -> None:
    if value.second or value.microsecond:
        raise ValidationError(
            _("Times are to the minute: %(time)s has seconds (enter %(minute)s).")
            % {"time": value.isoformat(), "minute": f"{value:%H:%M}"}
        )


def _time_field(label: StrOrPromise, **kwargs: Any) -> forms.TimeField:
    return forms.TimeField(
        label=label,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        validators=[_whole_minute],
        **kwargs,
    )


def reason_field(*, required: bool, help_text: StrOrPromise = "") -> forms.CharField:
    return forms.CharField(
        label=_("Reason"),
        required=required,
        widget=REASON_WIDGET,
        help_text=help_text,
        max_length=REASON_MAX_LENGTH,
    )


class LifecycleForm(forms.Form):
    """Base of the action forms; `procedure_rows` is empty except when recording a visit."""

    def procedure_rows(self) -> list[tuple[str, forms.BoundField, forms.BoundField]]:
        return []

    def plain_fields(self) -> list[forms.BoundField]:
        in_rows = {bound.name for _, done, why in self.procedure_rows() for bound in (done, why)}
        return [bound for bound in self.visible_fields() if bound.name not in in_rows]


class VisitVersionMixin(forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)


class VisitBookForm(LifecycleForm, VisitVersionMixin):
    local_date = date_field(
        _("Date (site-local)"),
        help_text=_(
            "The site's today or later: a visit that already happened is recorded "
            "with “Record done”."
        ),
    )
    local_time = _time_field(
        _("Time (site-local)"),
        help_text=_(
            "A time the clocks skip or repeat that day is named in the preview, with "
            "the moment that will be booked."
        ),
    )
    reason = reason_field(
        required=False,
        help_text=_("Needed for a reschedule and for a date outside the visit window."),
    )


class VisitRecordDoneForm(LifecycleForm, VisitVersionMixin):
    actual_date = date_field(_("Actual date (site-local)"))
    actual_time = _time_field(_("Actual time (site-local)"), required=False)
    reason = reason_field(required=False, help_text=_("Needed when done outside the window."))

    def __init__(
        self, *args: Any, procedures: Sequence[ScheduledProcedure] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.procedure_codes = [p.procedure.code for p in procedures]
        self.procedure_names = {p.procedure.code: localized_name(p.procedure) for p in procedures}
        for code in self.procedure_codes:
            self.fields[f"not_done_{code}"] = forms.BooleanField(
                label=_("%(code)s not done") % {"code": code}, required=False
            )
            self.fields[f"not_done_reason_{code}"] = forms.CharField(
                label=_("Why %(code)s was not done") % {"code": code}, required=False
            )

    def procedure_rows(self) -> list[tuple[str, forms.BoundField, forms.BoundField]]:
        return [
            (
                f"{code} – {self.procedure_names[code]}",
                self[f"not_done_{code}"],
                self[f"not_done_reason_{code}"],
            )
            for code in self.procedure_codes
        ]

    def procedures_not_done(self) -> dict[str, str]:
        return {
            code: self.cleaned_data[f"not_done_reason_{code}"]
            for code in self.procedure_codes
            if self.cleaned_data[f"not_done_{code}"]
        }


class VisitCloseForm(LifecycleForm, VisitVersionMixin):
    """Mark missed or cancel: only a reason."""

    reason = reason_field(required=True)


class ParticipantWithdrawForm(LifecycleForm):
    on = date_field(_("Withdrawal date"))
    reason = reason_field(required=True)


class AnchorChangeForm(LifecycleForm):
    code = forms.ChoiceField(label=_("Anchor"))
    new_date = date_field(_("New date"))
    reason = reason_field(required=True)

    def __init__(self, *args: Any, anchors: Iterable[Anchor] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["code"].choices = [(a.code, f"{localized_name(a)} ({a.code})") for a in anchors]  # type: ignore[attr-defined]


class TaperDecisionForm(LifecycleForm):
    milestone_code = forms.ChoiceField(label=_("Taper"))
    # A taper reaches its target by week 104 at the latest (the protocol format's bound).
    week = forms.IntegerField(label=_("Week"), min_value=1, max_value=104)
    dose_mg = forms.DecimalField(
        label=_("Dose (mg/day)"),
        required=False,
        min_value=0,
        max_digits=7,
        decimal_places=2,
        help_text=_("Leave empty to hold the taper at last week's dose."),
    )
    allow_increase = forms.BooleanField(
        label=_("The investigator confirms a dose above last week's"), required=False
    )
    reason = reason_field(required=True)

    def __init__(self, *args: Any, tapers: Iterable[MilestoneRule] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["milestone_code"].choices = [  # type: ignore[attr-defined]
            (rule.code, f"{localized_name(rule)} ({rule.code})") for rule in tapers
        ]


class UnscheduledVisitForm(LifecycleForm):
    local_date = date_field(_("Date (site-local)"))
    local_time = _time_field(
        _("Time (site-local)"), required=False, help_text=_("With a time the visit is booked.")
    )
    reason = reason_field(required=True, help_text=_("Why the visit is needed (a flare, say)."))
    procedure_codes = forms.MultipleChoiceField(
        label=_("Procedures"), required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(
        self, *args: Any, procedures: Iterable[ProcedureDefinition] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["procedure_codes"].choices = [  # type: ignore[attr-defined]
            (p.code, f"{p.code} – {localized_name(p)}") for p in procedures
        ]


class ParticipantCompleteForm(LifecycleForm):
    on = date_field(_("Completion date"))
    reason = reason_field(required=False, help_text=_("Empty: “completed the study”."))


class ScreenFailForm(LifecycleForm):
    on = date_field(_("Screen-failure date"))
    reason = reason_field(
        required=True, help_text=_("The criterion not met, as the screening log should read.")
    )


class MoveToVersionForm(LifecycleForm):
    """Move a participant onto another published protocol version from a date."""

    version_id = forms.TypedChoiceField(label=_("Protocol version"), coerce=int)
    on = date_field(_("From (site-local)"))
    reason = reason_field(required=True, help_text=_("The amendment, as the audit trail says it."))

    def __init__(self, *args: Any, versions: Iterable[ProtocolVersion] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["version_id"].choices = [  # type: ignore[attr-defined]
            (version.pk, str(version)) for version in versions
        ]
