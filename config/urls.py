from django.contrib import admin
from django.urls import include, path, re_path

from scheduler.security import PASSKEY_PATH, passkey_urls, two_factor_setup, two_factor_verify
from scheduler.views import calendar_feed, healthz, language_switch, livez

admin.site.site_header = "Trial visit scheduler"
admin.site.site_title = "Trial visit scheduler"
admin.site.index_title = "Trials, participants and calendars"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("livez", livez, name="livez"),
    re_path(
        r"^feeds/(?P<kind>participant|site)/(?P<token>[A-Za-z0-9_-]{32,100})\.ics$",
        calendar_feed,
        name="calendar-feed",
    ),
    # The admin header's language switch (POST, CSRF-protected).
    path("language", language_switch, name="language-switch"),
    # Second factors for staff (scheduler/security.py), before the admin's own URLs.
    path("admin/two-factor/", two_factor_setup, name="two-factor-setup"),
    path("admin/two-factor/verify/", two_factor_verify, name="two-factor-verify"),
    path(PASSKEY_PATH.lstrip("/"), include(passkey_urls, namespace="otp_webauthn")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("scheduler.api.urls")),
]

# A database that is away answers 503 with Retry-After, not a 500 (config/errors.py).
handler500 = "config.errors.server_error"
