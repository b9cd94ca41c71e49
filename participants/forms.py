"""Forms that register a participant and prepare their enrollment.

They only parse what a coordinator typed; whether it may be saved (a site that runs the trial,
anchors the protocol knows, eligibility) is decided by the services, whose refusals the admin
shows on the same form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import QuerySet
from django.utils import timezone

from participants.models import Participant
from trials.models import Anchor, Arm, TrialSite, validate_timezone
from trials.protocol_file import EARLIEST_DATE, LATEST_DATE, Channel

DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
ANCHOR_PREFIX = "anchor_"


# The model's own limits (max_digits=5, decimal_places=1, at least 1 kg), and a plausible
# ceiling: a weight above it is a typing slip (grams, pounds) that would set a weight-based dose.
WEIGHT_MIN_KG = Decimal(1)
WEIGHT_MAX_KG = Decimal(400)
# The oldest birth date taken: a participant at most 130 years old today.
OLDEST_AGE_YEARS = 130


def _date_field(label: str, **kwargs: Any) -> forms.DateField:
    # 1900 to 2200, as every form and the API (see trials.protocol_file.EARLIEST_DATE).
    validators = [
        *kwargs.pop("validators", []),
        MinValueValidator(EARLIEST_DATE, message="Enter a date on or after %(limit_value)s."),
        MaxValueValidator(LATEST_DATE, message="Enter a date on or before %(limit_value)s."),
    ]
    return forms.DateField(label=label, widget=DATE_WIDGET, validators=validators, **kwargs)


def latest_today() -> dt.date:
    """Today where it is already latest (UTC+14): no one anywhere is born after it."""
    return (timezone.now() + dt.timedelta(hours=14)).date()


def validate_birth_date(value: dt.date) -> None:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        return  # the date field's own range says so; one message per mistake
    today = latest_today()
    if value > today:
        raise ValidationError(
            f"A birth date cannot be in the future (today is {today.isoformat()} at the latest)."
        )
    oldest = today.replace(year=today.year - OLDEST_AGE_YEARS, day=1)
    if value < oldest:
        raise ValidationError(
            f"A birth date before {oldest.isoformat()} ({OLDEST_AGE_YEARS} years ago) is not "
            "plausible; check the year."
        )


def _birth_date_field() -> forms.DateField:
    return _date_field("Birth date", validators=[validate_birth_date])


def _weight_field() -> forms.DecimalField:
    return forms.DecimalField(
        label="Weight (kg)",
        required=False,
        max_digits=5,
        decimal_places=1,
        min_value=WEIGHT_MIN_KG,
        max_value=WEIGHT_MAX_KG,
    )


def trial_site_label(trial_site: TrialSite) -> str:
    return f"{trial_site.trial.code} at {trial_site.site.name} ({trial_site.site.code})"


class TrialSiteChoiceForm(forms.Form):
    """Step one of adding a participant: the trial and site decide the protocol version, and
    with it which anchor dates the registration asks for."""

    trial_site = forms.ModelChoiceField(
        label="Trial and site", queryset=TrialSite.objects.none(), empty_label="---------"
    )

    def __init__(self, *args: Any, trial_sites: QuerySet[TrialSite], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["trial_site"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = trial_sites
        field.label_from_instance = trial_site_label  # type: ignore[method-assign, assignment]


class ParticipantRegisterForm(forms.Form):
    """Who the candidate is and how to reach them, and their anchor dates (one field per anchor
    of the protocol version they will start on, named `anchor_<code>`)."""

    trial_site = forms.IntegerField(widget=forms.HiddenInput)
    study_id = forms.CharField(label="Study id", max_length=40)
    birth_date = _birth_date_field()
    weight_kg = _weight_field()
    email = forms.EmailField(required=False, max_length=254)
    phone = forms.CharField(max_length=40, required=False)
    guardian_name = forms.CharField(max_length=200, required=False)
    guardian_email = forms.EmailField(required=False, max_length=254)
    guardian_phone = forms.CharField(
        max_length=40, required=False, help_text="A minor's SMS go here (else to the phone above)."
    )
    language = forms.ChoiceField(choices=Participant.Language.choices)
    timezone = forms.CharField(
        max_length=64, required=False, validators=[validate_timezone], label="Time zone"
    )
    reminder_channels = forms.MultipleChoiceField(
        choices=[(Channel.EMAIL.value, "email"), (Channel.SMS.value, "SMS")],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=[Channel.EMAIL.value],
        help_text="None ticked: email only. SMS needs a phone number.",
    )

    def __init__(
        self, *args: Any, trial_site: TrialSite, anchors: Iterable[Anchor] = (), **kwargs: Any
    ) -> None:
        kwargs.setdefault("initial", {}).setdefault("trial_site", trial_site.pk)
        super().__init__(*args, **kwargs)
        self.fields["timezone"].help_text = f"Empty: the site's ({trial_site.site.timezone})."
        self.anchor_codes: list[str] = []
        for anchor in anchors:
            help_text = ""
            if anchor.relative_to:
                help_text = (
                    f"{anchor.min_days} to {anchor.max_days} day(s) after {anchor.relative_to}"
                )
                if anchor.default_days is not None:
                    help_text += f"; empty: planned {anchor.default_days} day(s) after it"
            self.fields[f"{ANCHOR_PREFIX}{anchor.code}"] = _date_field(
                anchor.name, required=False, help_text=help_text
            )
            self.anchor_codes.append(anchor.code)

    def anchor_dates(self) -> dict[str, Any]:
        return {
            code: self.cleaned_data[f"{ANCHOR_PREFIX}{code}"]
            for code in self.anchor_codes
            if self.cleaned_data.get(f"{ANCHOR_PREFIX}{code}") is not None
        }

    def field_for(self, key: str) -> str | None:
        """The field a service's ValidationError key belongs to (None: the whole form)."""
        if key == "anchors" and self.anchor_codes:
            return None
        return key if key in self.fields and key != "trial_site" else None


class EnrollmentCheckForm(forms.Form):
    """On the enrollment page: the details eligibility is checked against (fixed here when they
    were typed wrong), and the treatment arm when the coordinator may see arms."""

    birth_date = _birth_date_field()
    weight_kg = _weight_field()
    arm = forms.ModelChoiceField(label="Treatment arm", queryset=Arm.objects.none(), required=False)

    DETAILS = ("birth_date", "weight_kg")

    def __init__(self, *args: Any, arms: QuerySet[Arm] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if arms is None:
            del self.fields["arm"]
        else:
            field = self.fields["arm"]
            assert isinstance(field, forms.ModelChoiceField)
            field.queryset = arms

    def changed_details(self) -> list[str]:
        return [name for name in self.DETAILS if name in self.changed_data]
