"""One preview → confirm flow for every lifecycle action of the admin.

An action (book a visit, record it done, withdraw a participant, move a site onto an
amendment …) is a small class: the form it asks, what its service *would* change (the
preview: nothing written), and the one call to the service that changes it (the confirm).
`lifecycle_view` is the only view that runs them, so every action behaves the same way:

1. GET: the form, above a summary of the record;
2. POST "Preview": the form validated, then the preview page (what will happen, the calendar
   that moves), with what was typed carried in hidden fields;
3. POST "Confirm": the service called once; its message shown on the record it changed;
4. a refusal from the service (a closed window, a stale version, a dose above its cap) shows
   the form again with the refusal, what was typed, and the record as it is now.

Who may run an action is the admin's rule (`ScopedAdmin.writable`): no write role anywhere
is a 403 whatever the id, and another site's record is a 404, like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Generic, TypeVar

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from scheduler.calendar import CalendarDiff
from scheduler.forms import LifecycleForm
from scheduler.governance import GovernanceError
from scheduler.services import CalendarError
from trials.services import ProtocolImportError

Record = TypeVar("Record", bound=Model)
# (label, value, highlighted): one line of "what will happen".
Outcome = list[tuple[str, str, bool]]
# (label, value): the record the action acts on, above its form.
Summary = list[tuple[str, str]]
# What a service says when it refuses: shown on the form, nothing written.
REFUSALS = (CalendarError, GovernanceError, ProtocolImportError)


@dataclass
class Preview:
    """What the service would change: said in lines, plus the calendar that would move."""

    outcome: Outcome
    diff: CalendarDiff | None = None
    note: str | None = None
    # Anything else the preview template shows (the visits a withdrawal cancels, say).
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Done:
    """A confirmed change: the message, and the record whose page shows it."""

    message: str
    record: Model


class LifecycleAction(Generic[Record]):
    """One action on a record. Subclasses name the form and implement `preview` and
    `confirm`; both get the validated form's data and may raise CalendarError."""

    name: ClassVar[str]  # the URL's name ("record_done") and route ("record-done")
    title: ClassVar[str]
    form_class: ClassVar[type[LifecycleForm]]
    submit_label: ClassVar[str] = "Preview"
    confirm_label: ClassVar[str] = "Confirm"

    def available(self, record: Record) -> bool:
        """Offered on the record's page (the view itself lets the service refuse)."""
        return True

    def form(self, record: Record, data: Any, asked: Any = None) -> LifecycleForm:
        """The form; `asked` (the page's query string) pre-fills any of its fields, so a
        button elsewhere (a taper week on the timeline) opens it for that week."""
        initial = self.initial(record)
        if asked:
            fields = self.form_class.base_fields
            initial.update(
                {name: asked[name] for name in fields if name != "version" and name in asked}
            )
        return self.form_class(data, initial=initial, **self.form_kwargs(record))

    def initial(self, record: Record) -> dict[str, Any]:
        version = getattr(record, "version", None)
        return {"version": version} if isinstance(version, int) else {}

    def form_kwargs(self, record: Record) -> dict[str, Any]:
        return {}

    def note(self, record: Record) -> str | None:
        """Said above the form (why no date is suggested, say)."""
        return None

    def page_context(self, record: Record) -> dict[str, Any]:
        """More for the form's page (the site's calendar beside a booking form)."""
        return {}

    def preview(self, record: Record, data: dict[str, Any], form: LifecycleForm) -> Preview:
        raise NotImplementedError

    def confirm(self, record: Record, data: dict[str, Any], form: LifecycleForm, by: User) -> Done:
        raise NotImplementedError


def _submitted(request: HttpRequest) -> bool:
    """A preview or confirm post; "Back to the form" re-shows the form with what was typed."""
    return request.method == "POST" and "_edit" not in request.POST


class LifecycleActions:
    """Mixed into a CalendarActionsAdmin: its `lifecycle` actions get their URLs, their
    buttons on the record's page, and `lifecycle_view`."""

    lifecycle: ClassVar[Sequence[LifecycleAction[Any]]] = ()
    # What the action pages read of the record, in the query that fetches it.
    action_select_related: ClassVar[Sequence[str]] = ()

    # Provided by ScopedAdmin and Django's ModelAdmin.
    model: Any
    admin_site: Any
    message_user: Any
    may_write: Any
    writable: Any
    visible_object: Any

    def action_url(self, name: str, obj: Model) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[obj.pk])

    def action_path(self, route: str, name: str, view: Callable[..., HttpResponse]) -> URLPattern:
        opts = self.model._meta
        return path(
            f"<int:object_id>/{route}/",
            self.admin_site.admin_view(view),
            name=f"{opts.app_label}_{opts.model_name}_{name}",
        )

    def action_page(
        self,
        request: HttpRequest,
        obj: Model,
        *,
        template: str,
        title: str,
        form: LifecycleForm,
        summary: Summary,
        **context: Any,
    ) -> TemplateResponse:
        opts = self.model._meta
        return TemplateResponse(
            request,
            f"admin/lifecycle/{template}.html",
            {
                **self.admin_site.each_context(request),
                "opts": opts,
                "title": title,
                "original": obj,
                "original_url": reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
                ),
                "form": form,
                "summary": summary,
                **context,
            },
        )

    def action_done(self, request: HttpRequest, message: str, obj: Model) -> HttpResponseRedirect:
        """After a confirmed change: say what happened, on the page of the record changed."""
        self.message_user(request, message, messages.SUCCESS)
        opts = obj._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )

    def summary(self, record: Any) -> Summary:
        raise NotImplementedError

    def lifecycle_urls(self) -> list[URLPattern]:
        return [
            self.action_path(
                action.name.replace("_", "-"),
                action.name,
                partial(self.lifecycle_view, action=action),
            )
            for action in self.lifecycle
        ]

    def lifecycle_buttons(self, request: HttpRequest, record: Any) -> list[tuple[str, str]]:
        """(label, URL) of each action offered on the record's page, for a user who may."""
        if not self.may_write(request, record):
            return []
        return [
            (action.title, self.action_url(action.name, record))
            for action in self.lifecycle
            if action.available(record)
        ]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and (buttons := self.lifecycle_buttons(request, obj)):
            context["lifecycle_actions"] = buttons
        return super().render_change_form(  # type: ignore[misc]
            request, context, add, change, form_url, obj
        )

    def action_record(self, request: HttpRequest, object_id: Any) -> Any:
        # No write role anywhere: refused whatever the id. A write role: another site's
        # record (or one only read here) is a 404, like one that does not exist.
        if not self.may_write(request):
            raise PermissionDenied
        queryset: QuerySet[Any] = self.writable(request)
        if self.action_select_related:
            queryset = queryset.select_related(*self.action_select_related)
        return self.visible_object(request, object_id, queryset)

    def lifecycle_view(
        self, request: HttpRequest, object_id: Any, *, action: LifecycleAction[Any]
    ) -> HttpResponse:
        record = self.action_record(request, object_id)
        form = action.form(record, request.POST if request.method == "POST" else None, request.GET)
        if _submitted(request) and form.is_valid():
            data = form.cleaned_data
            try:
                if "_confirm" in request.POST:
                    done = action.confirm(record, data, form, request.user)  # type: ignore[arg-type]
                    response = self.action_done(request, done.message, done.record)
                    back = request.GET.get("next", "")
                    # Back where the action was started (the timeline, the start page), if
                    # that is a page of this site; else the record's own page.
                    if back and url_has_allowed_host_and_scheme(
                        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
                    ):
                        response["Location"] = back
                    return response  # type: ignore[no-any-return]
                preview = action.preview(record, data, form)
            except REFUSALS as refusal:
                record, form = self._refused(request, object_id, action, refusal)
            else:
                return self._action_page(
                    request,
                    record,
                    action,
                    "preview",
                    form,
                    outcome=preview.outcome,
                    diff=preview.diff,
                    note=preview.note,
                    confirm_label=action.confirm_label,
                    **preview.context,
                )
        return self._action_page(
            request,
            record,
            action,
            "form",
            form,
            note=action.note(record),
            submit_label=action.submit_label,
            **action.page_context(record),
        )

    def _refused(
        self,
        request: HttpRequest,
        object_id: Any,
        action: LifecycleAction[Any],
        refusal: Exception,
    ) -> tuple[Any, LifecycleForm]:
        """The form again, with the refusal, what was typed, and the record as it is now.

        The page then shows the record's current state and carries its current version: a
        coordinator refused because someone else changed the record previews again against
        that change before confirming.
        """
        record = self.action_record(request, object_id)
        data = request.POST.copy()
        if isinstance(getattr(record, "version", None), int):
            data["version"] = str(record.version)
        form = action.form(record, data)
        form.is_valid()
        # Beside the input at fault when the refusal names one the form has (a withdrawal's
        # `on`, a booking's `local_date`), else above the form.
        field = getattr(refusal, "field", None)
        form.add_error(field if field in form.fields else None, str(refusal))
        return record, form

    def _action_page(
        self,
        request: HttpRequest,
        record: Any,
        action: LifecycleAction[Any],
        template: str,
        form: LifecycleForm,
        **context: Any,
    ) -> TemplateResponse:
        return self.action_page(  # type: ignore[no-any-return]
            request,
            record,
            template=template,
            title=action.title,
            form=form,
            summary=self.summary(record),
            **context,
        )
