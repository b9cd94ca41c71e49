"""/api/v1/: the REST API for site systems, its OAuth2 token endpoints, schema and docs."""

from __future__ import annotations

from django.urls import include, path, re_path, register_converter

# Swagger UI only: drf-spectacular's Redoc page loads web fonts from a CDN. The split view
# serves Swagger UI's start-up script as a file of its own (?script), so the page runs under
# the Content-Security-Policy's script-src 'self' with no inline script.
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from oauth2_provider import views as oauth2_views

from scheduler.api import booking, views
from scheduler.api.demo import demo_webhook_receiver


class IdConverter:
    """Database ids: at most 18 digits, so nothing overflows a 64-bit column (else 404)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

app_name = "api"

urlpatterns = [
    path("oauth/token/", oauth2_views.TokenView.as_view(), name="token"),
    path("oauth/revoke/", oauth2_views.RevokeTokenView.as_view(), name="revoke-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("trials/", views.TrialList.as_view(), name="trial-list"),
    path("trials/<slug:code>/", views.TrialDetail.as_view(), name="trial-detail"),
    path(
        "trials/<slug:code>/versions/",
        views.ProtocolVersionList.as_view(),
        name="protocol-version-list",
    ),
    re_path(
        r"^trials/(?P<code>[-a-zA-Z0-9_]+)/versions/(?P<label>[^/]{1,40})/$",
        views.ProtocolVersionDetail.as_view(),
        name="protocol-version-detail",
    ),
    path("sites/", views.SiteList.as_view(), name="site-list"),
    path("sites/<slug:code>/", views.SiteDetail.as_view(), name="site-detail"),
    path("sites/<slug:code>/feeds/", views.SiteFeeds.as_view(), name="site-feeds"),
    path("sites/<slug:code>/calendar/", booking.SiteCalendarView.as_view(), name="site-calendar"),
    path("participants/", views.ParticipantList.as_view(), name="participant-list"),
    path("participants/<id:pk>/", views.ParticipantDetail.as_view(), name="participant-detail"),
    path(
        "participants/<id:pk>/eligibility/",
        views.ParticipantEligibility.as_view(),
        name="participant-eligibility",
    ),
    path(
        "participants/<id:pk>/calendar/", views.CalendarView.as_view(), name="participant-calendar"
    ),
    path(
        "participants/<id:pk>/enroll/", views.ParticipantEnroll.as_view(), name="participant-enroll"
    ),
    path(
        "participants/<id:pk>/withdraw/",
        views.ParticipantWithdraw.as_view(),
        name="participant-withdraw",
    ),
    path(
        "participants/<id:pk>/complete/",
        views.ParticipantComplete.as_view(),
        name="participant-complete",
    ),
    path("enrollments/", views.EnrollmentBatch.as_view(), name="enrollment-batch"),
    path("visits/", views.VisitList.as_view(), name="visit-list"),
    path("visits/<id:pk>/", views.VisitDetail.as_view(), name="visit-detail"),
    path(
        "visits/<id:pk>/book/preview/", views.VisitBookPreview.as_view(), name="visit-book-preview"
    ),
    path("visits/<id:pk>/book/", views.VisitBook.as_view(), name="visit-book"),
    path("visits/<id:pk>/slots/", booking.VisitSlotsView.as_view(), name="visit-slots"),
    path("visits/<id:pk>/book-slot/", booking.VisitBookSlot.as_view(), name="visit-book-slot"),
    path(
        "visits/<id:pk>/record-done/preview/",
        views.VisitRecordDonePreview.as_view(),
        name="visit-record-done-preview",
    ),
    path("visits/<id:pk>/record-done/", views.VisitRecordDone.as_view(), name="visit-record-done"),
    path("visits/<id:pk>/mark-missed/", views.VisitMarkMissed.as_view(), name="visit-mark-missed"),
    path("visits/<id:pk>/cancel/", views.VisitCancel.as_view(), name="visit-cancel"),
    path(
        "participants/<id:pk>/unscheduled-visits/",
        views.UnscheduledVisitAdd.as_view(),
        name="participant-unscheduled-visit",
    ),
    path(
        "participants/<id:pk>/anchors/<slug:code>/preview/",
        views.AnchorChangePreview.as_view(),
        name="participant-anchor-preview",
    ),
    path(
        "participants/<id:pk>/anchors/<slug:code>/",
        views.AnchorChange.as_view(),
        name="participant-anchor",
    ),
    path(
        "participants/<id:pk>/taper-decisions/preview/",
        views.TaperDecisionPreview.as_view(),
        name="participant-taper-decision-preview",
    ),
    path(
        "participants/<id:pk>/taper-decisions/",
        views.TaperDecision.as_view(),
        name="participant-taper-decision",
    ),
    path(
        "participants/<id:pk>/protocol-version/preview/",
        views.VersionMovePreview.as_view(),
        name="participant-version-preview",
    ),
    path(
        "participants/<id:pk>/protocol-version/",
        views.VersionMove.as_view(),
        name="participant-version",
    ),
    path(
        "participants/<id:pk>/reminders/",
        views.ParticipantReminderList.as_view(),
        name="participant-reminders",
    ),
    path("participants/<id:pk>/feeds/", views.ParticipantFeeds.as_view(), name="participant-feeds"),
    path("visits/<id:pk>/reminders/", views.VisitReminderList.as_view(), name="visit-reminders"),
    path("reminders/<id:pk>/", views.ReminderDetail.as_view(), name="reminder-detail"),
    path("reminders/<id:pk>/retry/", views.ReminderRetry.as_view(), name="reminder-retry"),
    path("feeds/<id:pk>/revoke/", views.FeedRevoke.as_view(), name="feed-revoke"),
    path(
        "trials/<slug:code>/sites/<slug:site>/approval/preview/",
        views.SiteApprovalPreview.as_view(),
        name="site-approval-preview",
    ),
    path(
        "trials/<slug:code>/sites/<slug:site>/approval/",
        views.SiteApproval.as_view(),
        name="site-approval",
    ),
    path("webhooks/", include("scheduler.api.webhooks")),
    # Not part of the API (no schema, 404 without DEBUG): the laptop demo's receiver.
    path("demo/webhook-receiver/", demo_webhook_receiver, name="demo-webhook-receiver"),
    re_path(r"^[\s\S]*$", views.NotFoundView.as_view(), name="not-found"),
]
