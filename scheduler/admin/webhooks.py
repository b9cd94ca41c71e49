"""Webhook subscriptions in the admin: listed, created (the secret shown once), their secret
rotated (the new one shown once; the old one keeps signing for a grace period), disabled.

Where a site system's events go is an access decision, like its memberships, so subscriptions
are managed by whoever manages users. A subscription is never edited: to change it, disable
it and create another (the audit trail reads "subscribed … disabled"). Its deliveries are
outbox rows (channel "webhook") in the reminders list, failed and dead ones with their error.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from scheduler import access
from scheduler.admin.scoping import UserManagersAdmin
from scheduler.models import Membership, Reminder, WebhookSubscription
from scheduler.webhooks import (
    EVENT_TYPES,
    rotation_grace,
    webhook_subscription_create,
    webhook_subscription_problems,
    webhook_subscription_rotate_secret,
    webhook_subscriptions_disable,
)
from trials.admin import AuditTrailAdmin


class WebhookSubscriptionForm(forms.ModelForm):  # type: ignore[type-arg]
    url = forms.URLField(
        max_length=500, assume_scheme="https", help_text="Where events are POSTed."
    )
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in EVENT_TYPES], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = WebhookSubscription
        fields = ["owner", "trial", "sites", "url", "events", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "owner" in self.fields:
            self.fields["owner"].queryset = (  # type: ignore[attr-defined]
                get_user_model()
                .objects.filter(memberships__role=Membership.Role.SITE_SYSTEM, is_active=True)
                .distinct()
                .order_by("username")
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        problems = webhook_subscription_problems(
            owner=cleaned["owner"],
            trial=cleaned["trial"],
            sites=list(cleaned["sites"]),
            url=cleaned["url"],
            events=cleaned["events"],
        )
        for field, messages_ in problems.items():
            for message in messages_:
                self.add_error(field, message)
        return cleaned


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(UserManagersAdmin, AuditTrailAdmin):
    form = WebhookSubscriptionForm
    change_form_template = "admin/webhooks/change_form.html"
    list_display = ["id", "owner", "trial", "site_codes", "url", "event_list", "is_active"]
    list_filter = ["is_active", "trial"]
    search_fields = ["owner__username", "url", "description"]
    list_select_related = ["owner", "trial"]
    actions = ["disable"]
    # The secret is not a field here, nor in the audit trail: it was shown once, at creation.
    readonly_fields = ["deliveries", "created_at", "updated_at", "disabled_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookSubscription]:
        return super().get_queryset(request).prefetch_related("sites")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ["owner", "trial", "sites", "url", "events", "description"]
        if obj is None:
            return fields
        return [*fields, "is_active", "disabled_at", "created_at", "updated_at", "deliveries"]

    @admin.display(description="sites")
    def site_codes(self, subscription: WebhookSubscription) -> str:
        return ", ".join(sorted(site.code for site in subscription.sites.all()))

    @admin.display(description="events")
    def event_list(self, subscription: WebhookSubscription) -> str:
        return ", ".join(subscription.events)

    @admin.display(description="deliveries")
    def deliveries(self, subscription: WebhookSubscription) -> str:
        counts = dict(
            Reminder.objects.filter(webhook__subscription=subscription)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none yet"
        url = reverse("admin:scheduler_reminder_changelist")
        return format_html(
            '{} · <a href="{}?channel__exact=webhook&amp;attention=failed_or_dead">'
            "failed and dead webhook deliveries</a>",
            summary,
            url,
        )

    def permits(self, request: HttpRequest, action: str, obj: Any = None) -> bool:
        # Subscribed and read by user managers; a subscription is never edited or deleted
        # (disable it, or rotate its secret), so its trail reads as what was delivered where.
        return action in ("module", "view", "add") and access.manages_users(request.user)

    def has_disable_permission(self, request: HttpRequest) -> bool:
        return access.manages_users(request.user)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            raise PermissionDenied
        data = form.cleaned_data
        subscription, secret = webhook_subscription_create(
            owner=data["owner"],
            trial=data["trial"],
            sites=list(data["sites"]),
            url=data["url"],
            events=data["events"],
            description=data.get("description", ""),
            by=request.user,
        )
        obj.pk = subscription.pk
        # Kept on this request only, for the page that shows it once (response_add).
        request._webhook_secret = secret  # type: ignore[attr-defined]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the service set the sites

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: str | None = None
    ) -> HttpResponse:
        subscription = WebhookSubscription.objects.get(pk=obj.pk)
        return TemplateResponse(
            request,
            "admin/webhooks/secret_once.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"Signing secret of {subscription}",
                "subscription": subscription,
                "secret": request._webhook_secret,  # type: ignore[attr-defined]
            },
        )

    @admin.action(description="Disable the selected subscriptions", permissions=["disable"])
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        disabled = webhook_subscriptions_disable(subscriptions=queryset, by=request.user)
        self.message_user(
            request,
            f"{disabled} subscription(s) disabled: nothing more is sent to them.",
            messages.SUCCESS,
        )

    # ------------------------------------------------------------------------------------
    # Rotating the signing secret: a button on the subscription's page, a confirm page that
    # asks why, then the new secret shown once.

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/rotate-secret/",
                self.admin_site.admin_view(self.rotate_secret_view),
                name="scheduler_webhooksubscription_rotate_secret",
            ),
            *super().get_urls(),
        ]

    def rotate_secret_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_disable_permission(request):
            raise PermissionDenied
        subscription = self.get_object(request, object_id)
        if subscription is None:
            raise Http404("no such webhook subscription")
        change_url = reverse("admin:scheduler_webhooksubscription_change", args=[subscription.pk])
        error = ""
        if request.method == "POST":
            reason = request.POST.get("reason", "").strip()
            try:
                subscription, secret = webhook_subscription_rotate_secret(
                    subscription=subscription, by=request.user, reason=reason
                )
            except ValidationError as exc:
                error = "; ".join(exc.messages)
            else:
                return TemplateResponse(
                    request,
                    "admin/webhooks/secret_once.html",
                    {
                        **self.admin_site.each_context(request),
                        "opts": self.model._meta,
                        "title": f"New signing secret of {subscription}",
                        "subscription": subscription,
                        "secret": secret,
                        "rotated": True,
                        "grace_hours": rotation_grace().total_seconds() / 3600,
                    },
                )
        elif not subscription.is_active:
            self.message_user(
                request, "A disabled subscription sends nothing: create a new one.", messages.ERROR
            )
            return HttpResponseRedirect(change_url)
        return TemplateResponse(
            request,
            "admin/webhooks/rotate_secret.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"Rotate the signing secret of {subscription}",
                "subscription": subscription,
                "grace_hours": rotation_grace().total_seconds() / 3600,
                "error": error,
                "change_url": change_url,
            },
        )
