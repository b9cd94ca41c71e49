"""Adding a participant in the admin: register, check eligibility, fix, enroll.

The admin's "Add participant" leads here instead of Django's model form, because a participant
is never just a row: registering picks the protocol version the site approved and records the
anchors (`participant_register`), and enrolling checks eligibility and writes the calendar
(`participant_enroll`). The pages are thin: they parse, call one service, and show what the
service said, refusals included.

1. Add participant: the coordinator chooses the trial and site (they decide the protocol version
   and so which anchor dates are asked for), then types the candidate's details.
2. Registered in screening, the candidate's enrollment page lists every reason enrollment would
   be refused (`participant_enroll_check`): the failed eligibility checks in plain words, a
   missing anchor date. Birth date and weight can be corrected there and checked again.
3. Enroll: the calendar is written and the coordinator lands on the participant's page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from participants.contact import participant_contact_gap
from participants.forms import (
    EnrollmentCheckForm,
    ParticipantRegisterForm,
    TrialSiteChoiceForm,
)
from participants.models import Participant
from participants.services import participant_register, registration_version
from scheduler import access
from scheduler.access import can_confirm_eligibility, participant_today, site_today
from scheduler.admin.scoping import ScopedAdmin
from scheduler.display import site_time
from scheduler.services import (
    CalendarError,
    EnrollmentError,
    participant_details_save,
    participant_eligibility_confirm,
    participant_enroll,
    participant_enroll_check,
)
from trials.eligibility import age_in_years
from trials.models import Anchor, Arm, TrialSite


def _change_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_change", args=[participant.pk])


def enroll_url(participant: Participant) -> str:
    return reverse("admin:participants_participant_enroll", args=[participant.pk])


def may_see_arms(request: HttpRequest, participant: Participant) -> bool:
    """A blinded trial's arm is chosen only by a user allowed to see it (an unblinded role)."""
    return access.can_see_arm(request.user, trial=participant.trial, site=participant.site)


def _trial_sites(request: HttpRequest) -> QuerySet[TrialSite]:
    """Where the user may register a participant: the (trial, site) pairs of a write role."""
    return (
        access.trial_sites_for(request.user, roles=access.WRITE_ROLES)
        .select_related("trial", "site")
        .order_by("trial__code", "site__code")
    )


def participant_page_warnings(participant: Participant) -> list[str]:
    """What the participant's page says at the top while it is true: nobody can be reached."""
    gap = participant_contact_gap(participant, today=participant_today(participant))
    return [gap] if gap else []


def register_view(model_admin: ScopedAdmin, request: HttpRequest) -> HttpResponse:
    """The admin's "Add participant": choose trial and site, then register the candidate."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    query = request.POST if request.method == "POST" else request.GET
    choice_form = TrialSiteChoiceForm(
        query if "trial_site" in query else None, trial_sites=_trial_sites(request)
    )
    context: dict[str, Any] = {"choice_form": choice_form, "form": None, "version": None}
    if not choice_form.is_valid():
        return _register_page(model_admin, request, context)
    trial_site: TrialSite = choice_form.cleaned_data["trial_site"]
    version = registration_version(trial=trial_site.trial, site=trial_site.site)
    if version is None:
        choice_form.add_error(
            "trial_site", f"{trial_site.trial.code} has no published protocol version yet"
        )
        return _register_page(model_admin, request, context)
    anchors = Anchor.objects.filter(version=version).order_by("order")
    form = ParticipantRegisterForm(
        request.POST if request.method == "POST" else None,
        trial_site=trial_site,
        anchors=anchors,
    )
    context.update(form=form, version=version, trial_site=trial_site)
    if request.method == "POST" and form.is_valid():
        details = form.cleaned_data
        try:
            participant = participant_register(
                trial=trial_site.trial,
                site=trial_site.site,
                study_id=details["study_id"],
                birth_date=details["birth_date"],
                anchors=form.anchor_dates(),
                weight_kg=details["weight_kg"],
                email=details["email"],
                phone=details["phone"],
                guardian_name=details["guardian_name"],
                guardian_email=details["guardian_email"],
                guardian_phone=details["guardian_phone"],
                reminder_channels=details["reminder_channels"] or ["email"],
                timezone=details["timezone"] or None,
                language=details["language"],
                by=request.user,
            )
        except ValidationError as refusal:
            for key, errors in refusal.message_dict.items():
                for error in errors:
                    form.add_error(form.field_for(key), error)
        else:
            model_admin.message_user(
                request,
                f"{participant.study_id} registered in screening on {version}: check "
                "eligibility, then enroll.",
                messages.SUCCESS,
            )
            if model_admin.may_write(request, participant):
                return HttpResponseRedirect(enroll_url(participant))
            return HttpResponseRedirect(_change_url(participant))
    return _register_page(model_admin, request, context)


def _register_page(
    model_admin: admin.ModelAdmin, request: HttpRequest, context: dict[str, Any]
) -> TemplateResponse:
    return TemplateResponse(
        request,
        "admin/enroll/register.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "title": "Add participant",
            **context,
        },
    )


def enroll_view(model_admin: ScopedAdmin, request: HttpRequest, object_id: int) -> HttpResponse:
    """A screening participant's eligibility, the details it is checked against, and Enroll."""
    # Enrolling writes the calendar: a write role, and another site's participant is a 404.
    if not model_admin.may_write(request):
        raise PermissionDenied
    participant = model_admin.visible_object(
        request,
        object_id,
        model_admin.writable(request).select_related("trial", "site", "protocol_version__trial"),
    )
    if participant.status != Participant.Status.SCREENING:
        model_admin.message_user(
            request, f"{participant} is {participant.status}, not in screening.", messages.INFO
        )
        return HttpResponseRedirect(_change_url(participant))
    today = site_today(participant.site)
    arms = (
        Arm.objects.filter(version=participant.protocol_version_id).order_by("order")
        if may_see_arms(request, participant)
        else None
    )
    form = EnrollmentCheckForm(
        request.POST if request.method == "POST" else None,
        initial={"birth_date": participant.birth_date, "weight_kg": participant.weight_kg},
        arms=arms,
    )
    if request.method == "POST" and form.is_valid():
        changed = form.changed_details()
        if changed:
            # A corrected detail is saved and checked again before anyone may enroll on it.
            for name in changed:
                setattr(participant, name, form.cleaned_data[name])
            try:
                saved = participant_details_save(
                    participant=participant, changed_fields=changed, by=request.user
                )
            except CalendarError as refusal:
                form.add_error(None, str(refusal))
            else:
                model_admin.message_user(
                    request,
                    f"Details of {participant} saved; eligibility checked again.",
                    messages.SUCCESS,
                )
                for warning in saved.warnings:
                    model_admin.message_user(request, warning, messages.WARNING)
                return HttpResponseRedirect(enroll_url(participant))
        elif "_confirm_eligibility" in request.POST:
            try:
                participant_eligibility_confirm(participant=participant, on=today, by=request.user)
            except CalendarError as refusal:
                form.add_error(None, str(refusal))
            else:
                model_admin.message_user(
                    request,
                    _("Eligibility of %(participant)s confirmed by %(user)s.")
                    % {"participant": participant, "user": request.user.get_username()},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(enroll_url(participant))
        elif "_enroll" in request.POST:
            try:
                visits = participant_enroll(
                    participant=participant,
                    on=today,
                    arm=form.cleaned_data.get("arm"),
                    by=request.user,
                    require_confirmation=True,
                )
            except EnrollmentError as refusal:
                form.add_error(None, str(refusal))
            else:
                model_admin.message_user(
                    request,
                    f"Enrolled {participant} on {today.isoformat()}: {len(visits)} visit(s) "
                    "planned.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(_change_url(participant))
        else:
            return HttpResponseRedirect(enroll_url(participant))
    problems = participant_enroll_check(
        participant=participant,
        on=today,
        arm=form.cleaned_data.get("arm") if form.is_bound and form.is_valid() else None,
    )
    anchors = {a.code: a.date for a in participant.anchors.all()}
    age_on = anchors.get("consent", today)
    return TemplateResponse(
        request,
        "admin/enroll/enroll.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "title": "Check eligibility and enroll",
            "original": participant,
            "original_url": _change_url(participant),
            "summary": [
                ("Participant", str(participant)),
                ("Site", f"{participant.site.name} (today there: {today.isoformat()})"),
                ("Protocol version", str(participant.protocol_version)),
                (
                    "Anchors",
                    ", ".join(f"{code} {day.isoformat()}" for code, day in anchors.items()) or "—",
                ),
                (
                    "Age for eligibility",
                    f"{age_in_years(participant.birth_date, age_on)} on {age_on.isoformat()} "
                    f"({'the consent date' if 'consent' in anchors else 'today at the site'})",
                ),
            ],
            "form": form,
            "problems": problems,
            "confirmed_by": participant.eligibility_confirmed_by,
            "confirmed_at": site_time(participant.eligibility_confirmed_at, participant.site)
            if participant.eligibility_confirmed_at
            else None,
            "may_confirm": not problems
            and participant.eligibility_confirmed_by_id is None
            and can_confirm_eligibility(
                request.user, trial_id=participant.trial_id, site_id=participant.site_id
            ),
            "may_enroll": not problems and participant.eligibility_confirmed_by_id is not None,
        },
    )
