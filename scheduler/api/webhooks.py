"""/api/v1/webhooks/: a site system's own webhook subscriptions.

GET lists them (cursor pagination), POST subscribes (Idempotency-Key; the answer carries the
signing secret, shown this once), GET …/{id}/ reads one (ETag), POST …/{id}/rotate-secret/
gives it a new secret (If-Match and Idempotency-Key; the old one keeps signing too for a grace
period), POST …/{id}/disable/ stops it (If-Match and Idempotency-Key). Only the caller's own
subscriptions exist here: another system's is a 404, like one that never existed. What a
subscription may cover is decided by `scheduler.access` (the caller must act as a site system
at each site it names).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from scheduler import access
from scheduler.api.idempotency import idempotent
from scheduler.api.preconditions import require_if_match
from scheduler.api.views import IDEMPOTENCY_PARAM, IF_MATCH_PARAM, validated
from scheduler.models import WebhookSubscription
from scheduler.webhooks import (
    EVENT_TYPES,
    webhook_subscription_create,
    webhook_subscription_disable,
    webhook_subscription_previous_secret_until,
    webhook_subscription_rotate_secret,
    webhook_subscription_secret,
)


def webhook_etag(subscription: WebhookSubscription) -> str:
    state = f"{subscription.pk}|{subscription.is_active}|{subscription.updated_at.isoformat()}"
    digest = hashlib.sha256(state.encode()).hexdigest()[:20]
    return f'"webhook-{subscription.pk}-{digest}"'


class WebhookSubscriptionOut(serializers.ModelSerializer[WebhookSubscription]):
    trial = serializers.CharField(source="trial.code")
    sites = serializers.SerializerMethodField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES))
    active = serializers.BooleanField(source="is_active")
    etag = serializers.SerializerMethodField()

    class Meta:
        model = WebhookSubscription
        fields = [
            "id",
            "trial",
            "sites",
            "url",
            "events",
            "description",
            "active",
            "created_at",
            "updated_at",
            "disabled_at",
            "etag",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_sites(self, subscription: WebhookSubscription) -> list[str]:
        return sorted(site.code for site in subscription.sites.all())

    def get_etag(self, subscription: WebhookSubscription) -> str:
        return webhook_etag(subscription)


class WebhookSubscriptionCreatedOut(WebhookSubscriptionOut):
    secret = serializers.CharField(
        help_text="The signing secret (whsec_…): shown in this answer only. Verify each "
        "delivery's webhook-signature with it (Standard Webhooks)."
    )

    class Meta(WebhookSubscriptionOut.Meta):
        fields = [*WebhookSubscriptionOut.Meta.fields, "secret"]


class WebhookSubscriptionInput(serializers.Serializer[Any]):
    trial = serializers.CharField(max_length=40)
    sites = serializers.ListField(
        child=serializers.CharField(max_length=40), min_length=1, max_length=100
    )
    url = serializers.URLField(max_length=500, help_text="https (http only to localhost in dev).")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES), min_length=1, max_length=20
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)


def _subscriptions(request: Request) -> QuerySet[WebhookSubscription]:
    return (
        access.webhook_subscriptions_for(request.user)
        .select_related("trial")
        .prefetch_related("sites")
    )


def _subscription(request: Request, pk: int) -> WebhookSubscription:
    subscription = _subscriptions(request).filter(pk=pk).first()
    if subscription is None:
        raise exceptions.NotFound("no such webhook subscription")
    return subscription


def _field_error(field: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({field: [message]})


@extend_schema_view(
    post=extend_schema(
        request=WebhookSubscriptionInput,
        responses={201: WebhookSubscriptionCreatedOut},
        parameters=[IDEMPOTENCY_PARAM],
        summary="Subscribe to calendar events (a site system)",
    ),
)
class WebhookList(generics.ListAPIView[WebhookSubscription]):
    """The caller's webhook subscriptions (GET); subscribe to events of a trial at some of the
    caller's sites (POST: only a site system, only where it acts as one)."""

    serializer_class = WebhookSubscriptionOut
    ordering = ("id",)

    def get_queryset(self) -> QuerySet[WebhookSubscription]:
        return _subscriptions(self.request)

    def post(self, request: Request) -> Response:
        response = idempotent(request, lambda: self._create(request))
        if response.status_code == 201:
            # Not kept with the idempotency record: decrypted for this answer (or its replay).
            subscription = _subscription(request, response.data["id"])
            response.data["secret"] = webhook_subscription_secret(subscription=subscription)
        return response

    def _create(self, request: Request) -> Response:
        data = validated(WebhookSubscriptionInput, request.data)
        trial = access.trials_for(request.user).filter(code=data["trial"]).first()
        if trial is None:
            raise _field_error("trial", "no such trial")
        codes = list(dict.fromkeys(data["sites"]))
        sites = list(access.sites_for(request.user).filter(code__in=codes).order_by("code"))
        missing = sorted(set(codes) - {site.code for site in sites})
        if missing:
            raise _field_error("sites", f"no such site: {', '.join(missing)}")
        # A caller that is no site system anywhere may not subscribe at all (403); a site
        # system named on a site where it does not act as one for this trial (for another
        # trial, say) is told which (422, from the service).
        if not access.is_site_system(request.user):
            raise exceptions.PermissionDenied("only a site system subscribes to webhooks")
        subscription, _secret = webhook_subscription_create(
            owner=request.user,
            trial=trial,
            sites=sites,
            url=data["url"],
            events=data["events"],
            description=data.get("description", ""),
            by=request.user,
        )
        subscription = _subscription(request, subscription.pk)
        response = Response(
            WebhookSubscriptionOut(subscription).data,
            status=201,
            headers={"ETag": webhook_etag(subscription)},
        )
        response["Location"] = f"/api/v1/webhooks/{subscription.pk}/"
        return response


class WebhookDetail(generics.GenericAPIView[WebhookSubscription]):
    serializer_class = WebhookSubscriptionOut

    def get(self, request: Request, pk: int) -> Response:
        subscription = _subscription(request, pk)
        return Response(
            WebhookSubscriptionOut(subscription).data,
            headers={"ETag": webhook_etag(subscription)},
        )


@extend_schema_view(
    post=extend_schema(
        request=None,
        responses=WebhookSubscriptionOut,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
        summary="Disable a webhook subscription",
    )
)
class WebhookDisable(APIView):
    """Stop a subscription: nothing more is sent, deliveries not yet made are cancelled. It
    stays listed, disabled."""

    def post(self, request: Request, pk: int) -> Response:
        return idempotent(request, lambda: self._disable(request, pk))

    def _disable(self, request: Request, pk: int) -> Response:
        with transaction.atomic():
            subscription = _subscription(request, pk)
            require_if_match(request, webhook_etag(subscription))
            webhook_subscription_disable(subscription=subscription, by=request.user)
            subscription = _subscription(request, pk)
            return Response(
                WebhookSubscriptionOut(subscription).data,
                headers={"ETag": webhook_etag(subscription)},
            )


class WebhookSecretRotatedOut(WebhookSubscriptionCreatedOut):
    secret = serializers.CharField(
        help_text="The new signing secret (whsec_…): shown in this answer only. Until "
        "previous_secret_valid_until every delivery carries a signature under it and one "
        "under the previous secret (space-separated in webhook-signature); then only under it."
    )
    previous_secret_valid_until = serializers.DateTimeField(
        help_text="When the previous secret stops signing deliveries (UTC)."
    )

    class Meta(WebhookSubscriptionCreatedOut.Meta):
        fields = [*WebhookSubscriptionCreatedOut.Meta.fields, "previous_secret_valid_until"]


class RotateSecretInput(serializers.Serializer[Any]):
    reason = serializers.CharField(
        max_length=200,
        required=False,
        default="signing secret rotated",
        help_text="Why (kept in the audit trail), e.g. 'yearly rotation' or 'secret leaked'.",
    )


@extend_schema_view(
    post=extend_schema(
        request=RotateSecretInput,
        responses=WebhookSecretRotatedOut,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
        summary="Rotate a webhook subscription's signing secret",
    )
)
class WebhookRotateSecret(APIView):
    """Give the subscription a new signing secret, shown in this answer only. During the grace
    period (24 hours unless the deployment says otherwise) deliveries are signed with both the
    new and the previous secret, so the receiver can switch whenever it likes; then only
    with the new one. A replay of the same Idempotency-Key shows the current secret."""

    def post(self, request: Request, pk: int) -> Response:
        response = idempotent(
            request,
            lambda: self._rotate(request, pk),
            stored=lambda body: {**body, "secret": None},  # nosec B105  # no password
        )
        if response.status_code == 200:
            # Not kept with the idempotency record: decrypted for this answer (or its replay).
            subscription = _subscription(request, pk)
            response.data["secret"] = webhook_subscription_secret(subscription=subscription)
            response["Cache-Control"] = "no-store"
        return response

    def _rotate(self, request: Request, pk: int) -> Response:
        with transaction.atomic():
            subscription = _subscription(request, pk)
            reason = validated(RotateSecretInput, request.data or {})["reason"]
            require_if_match(request, webhook_etag(subscription))
            webhook_subscription_rotate_secret(
                subscription=subscription, by=request.user, reason=reason
            )
            subscription = _subscription(request, pk)
            until = webhook_subscription_previous_secret_until(subscription=subscription)
            assert until is not None  # just rotated
            body = {
                **WebhookSubscriptionOut(subscription).data,
                "secret": None,  # nosec B105  # a field name, not a password
                "previous_secret_valid_until": serializers.DateTimeField().to_representation(until),
            }
            return Response(body, headers={"ETag": webhook_etag(subscription)})


urlpatterns = [
    path("", WebhookList.as_view(), name="webhook-list"),
    path("<id:pk>/", WebhookDetail.as_view(), name="webhook-detail"),
    path("<id:pk>/rotate-secret/", WebhookRotateSecret.as_view(), name="webhook-rotate-secret"),
    path("<id:pk>/disable/", WebhookDisable.as_view(), name="webhook-disable"),
]
