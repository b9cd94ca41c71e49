"""Logins: lockouts and what they leave behind, idle sessions, and second factors.

- Failed sign-ins are counted per username by django-axes (config/settings.py "Logins"); the
  tenth locks the account for AXES_COOLOFF_MINUTES, and `lockout_response` says until when.
  Every failure and lockout goes through `record_security_event`: a log line without personal
  data; lockouts and second-factor events also get an entry in the security audit
  (scheduler/audittrail.py, which records failed sign-ins itself).
- A session ends after SESSION_IDLE_MINUTES without a request (`SessionIdleMiddleware`) or
  when the browser closes (SESSION_EXPIRE_AT_BROWSER_CLOSE).
- Every staff user may enrol an authenticator app (TOTP, django-otp) or a passkey or security
  key (WebAuthn, django-otp-webauthn's ceremonies and scripts, `passkey_urls`) on the
  "Two-factor" page; whoever holds a role named in OTP_REQUIRED_FOR (an unblinded role, a
  user manager) must, and `SecondFactorMiddleware` sends such a person, and anyone with a
  device who has not yet given it in this session, to enrol or verify before any admin or
  API page. Machines with OAuth2 tokens have no session and are never asked.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from base64 import b32encode
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import segno
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models import Max
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext, gettext_lazy
from django.views import View
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn import urls as webauthn_urls
from django_otp_webauthn.models import WebAuthnCredential
from django_otp_webauthn.views import (
    CompleteCredentialAuthenticationView,
    CompleteCredentialRegistrationView,
)

from scheduler import access, audittrail

logger = logging.getLogger("scheduler.security")

# Session keys: when the session's end was last moved (epoch seconds), and whether the user
# had a confirmed second factor when signing in (so no request asks the database again).
SESSION_TOUCHED_KEY = "security.touched_at"
HAS_DEVICE_SESSION_KEY = "security.has_second_factor"
# What record_security_event writes to the security audit (scheduler/audittrail.py); a
# failed sign-in is written there by the audit trail's own receiver of user_login_failed.
AUDITED_KINDS = frozenset(
    {"lockout", "locked_out_attempt", "second_factor_enrolled", "second_factor_failed"}
)


def record_security_event(kind: str, username: str | None, request: HttpRequest | None) -> None:
    """Record a security event ("login_failed", "lockout", "locked_out_attempt",
    "second_factor_enrolled", "second_factor_failed").

    The log line names the event, the user's id (never the username, which may be a mistyped
    password, nor the address) and the path. The security audit gets an entry for the kinds in
    AUDITED_KINDS, with the username tried and the client's address."""
    user_model = get_user_model()
    user_id = (
        user_model.objects.filter(**{user_model.USERNAME_FIELD: username})
        .values_list("pk", flat=True)
        .first()
        if username
        else None
    )
    path = request.path_info if request is not None else ""
    logger.warning("security event %s: user id %s, path %s", kind, user_id or "-", path)
    if kind in AUDITED_KINDS:
        audittrail.record(kind, username=(username or "")[:150], request=request, path=path)


def client_description(
    username: str, ip_address: str, user_agent: str, path_info: str, request: HttpRequest
) -> str:
    """What django-axes' own log lines say of a client (AXES_CLIENT_STR_CALLABLE): the path
    only, never the username or the address."""
    return f"a sign-in at {path_info}"


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kw: Any) -> None:
    # A refusal while locked out is the lockout's own event (below).
    if request is not None and getattr(request, "axes_locked_out", False):
        return
    record_security_event("login_failed", credentials.get("username"), request)


@receiver(user_locked_out)
def _locked_out(sender: Any, request: Any, username: str | None, **kw: Any) -> None:
    # axes sends this when the limit is reached (it has just counted the failure) and again
    # for each attempt refused while locked (it counted nothing).
    newly = getattr(request, "axes_failures_since_start", None) is not None
    record_security_event("lockout" if newly else "locked_out_attempt", username, request)


@receiver(user_logged_in)
def _remember_second_factor(sender: Any, request: Any, user: Any, **kw: Any) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[HAS_DEVICE_SESSION_KEY] = user_has_device(user, confirmed=True)
        # Signing in saves the session (and so sets its end) anyway.
        request.session[SESSION_TOUCHED_KEY] = int(time.time())


def unlock_at(username: str) -> dt.datetime | None:
    """When the lockout of `username` ends: the cool-off after its latest counted failure."""
    latest = AccessAttempt.objects.filter(username=username).aggregate(Max("attempt_time"))
    last_failure = latest["attempt_time__max"]
    return last_failure + settings.AXES_COOLOFF_TIME if last_failure else None


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """The page a locked-out sign-in gets (AXES_LOCKOUT_CALLABLE): locked, until when (UTC;
    a sign-in page belongs to no site), and what to do meanwhile."""
    username = get_client_username(request, credentials) or ""
    until = unlock_at(username) if username else None
    context = {
        **admin.site.each_context(request),
        "title": gettext_lazy("Account locked"),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "until": until.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if until else "",
        "cooloff_minutes": settings.AXES_COOLOFF_MINUTES,
    }
    return TemplateResponse(
        request, "registration/locked_out.html", context, status=settings.AXES_HTTP_RESPONSE_CODE
    ).render()


# ----------------------------------------------------------------------------------------
# Idle sessions


class SessionIdleMiddleware:
    """Move a signed-in session's end to SESSION_COOKIE_AGE from now, at most once a minute.

    The session table keeps each session's end: saving a session sets it to now plus
    SESSION_COOKIE_AGE (SESSION_IDLE_MINUTES), and a session past its end is gone. Touching
    the session only when the last touch is a minute old keeps the idle limit within a minute
    of exact without a database write on every request (what SESSION_SAVE_EVERY_REQUEST
    would cost)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.session
        if SESSION_KEY in session:
            now = int(time.time())
            touched = session.get(SESSION_TOUCHED_KEY)
            if not isinstance(touched, int) or now - touched >= settings.SESSION_REFRESH_SECONDS:
                session[SESSION_TOUCHED_KEY] = now
        return self.get_response(request)


# ----------------------------------------------------------------------------------------
# Second factors


def second_factor_required(user: Any) -> bool:
    """Must this user verify a second factor before using the admin or the API (an unblinded
    role anywhere, or a user manager, as OTP_REQUIRED_FOR says)?"""
    required = set(settings.OTP_REQUIRED_FOR)
    if "user_managers" in required and access.manages_users(user):
        return True
    return "unblinded" in required and access.holds_role(user, access.UNBLINDED_ROLES)


def second_factor_step(request: HttpRequest) -> str | None:
    """What this session's user must do before going on: "verify" (a device enrolled, no code
    given in this session), "enrol" (required, no device yet), or nothing."""
    user = request.user
    if not user.is_authenticated or user.is_verified():  # type: ignore[union-attr,attr-defined]
        return None
    if request.session.get(HAS_DEVICE_SESSION_KEY):
        return "verify"
    return "enrol" if second_factor_required(user) else None


def _exempt_paths() -> tuple[str, ...]:
    return (
        reverse("two-factor-setup"),
        reverse("two-factor-verify"),
        PASSKEY_PATH,
        reverse("admin:login"),
        reverse("admin:logout"),
        reverse("admin:jsi18n"),
        reverse("language-switch"),
        f"/{settings.STATIC_URL.lstrip('/')}",
    )


class SecondFactorMiddleware:
    """Send a signed-in person who must give a second factor to enrol or verify one first;
    a request to the API from such a session gets a 403 problem instead of a redirect."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A session without a signed-in user (a machine's bearer token, a feed, a probe)
        # costs nothing here.
        if SESSION_KEY not in request.session or request.path_info.startswith(_exempt_paths()):
            return self.get_response(request)
        step = second_factor_step(request)
        if step is None:
            return self.get_response(request)
        if request.path_info.startswith("/api/"):
            return JsonResponse(
                {
                    "type": "about:blank",
                    "title": "Two-factor verification required",
                    "status": 403,
                    "detail": "Verify your second factor in the admin before using the API "
                    "with this session.",
                },
                status=403,
                content_type="application/problem+json",
            )
        target = reverse("two-factor-verify" if step == "verify" else "two-factor-setup")
        return redirect(f"{target}?{_next_query(request.get_full_path())}")


def _next_query(path: str) -> str:
    return urlencode({"next": path})


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("admin:index")


class CodeForm(forms.Form):
    code = forms.RegexField(
        label=gettext_lazy("Code from your authenticator app"),
        regex=r"^\s*\d{6}\s*$",
        error_messages={"invalid": gettext_lazy("Enter the 6 digits your app shows.")},
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


def _page(request: HttpRequest, template: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {**admin.site.each_context(request), **context, "next": _next_url(request)},
    )


@staff_member_required
def two_factor_setup(request: HttpRequest) -> HttpResponse:
    """Enrol an authenticator app: scan the code (or type the key), then give one code."""
    user = request.user
    if user_has_device(user, confirmed=True):
        if not user.is_verified():  # type: ignore[union-attr,attr-defined]
            return HttpResponseRedirect(
                f"{reverse('two-factor-verify')}?{_next_query(_next_url(request))}"
            )
        return _page(
            request,
            "admin/two_factor/setup.html",
            title=gettext_lazy("Two-factor sign-in"),
            enrolled=True,
        )
    # One pending device per person: reloading the page keeps the key already scanned.
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=False)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["code"].strip()):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            otp_login(request, device)
            request.session[HAS_DEVICE_SESSION_KEY] = True
            record_security_event("second_factor_enrolled", user.get_username(), request)
            return HttpResponseRedirect(_next_url(request))
        form.add_error("code", gettext("That code is not the one your app shows now."))
        record_security_event("second_factor_failed", user.get_username(), request)
    uri = device.config_url
    return _page(
        request,
        "admin/two_factor/setup.html",
        title=gettext_lazy("Two-factor sign-in"),
        enrolled=False,
        form=form,
        required=second_factor_required(user),
        # An inline SVG (no image request, nothing for the CSP to allow).
        qr_svg=mark_safe(segno.make(uri, error="m").svg_inline(scale=4)),  # noqa: S308  # nosec B308 B703  # segno's SVG of our own otpauth URI
        secret=" ".join(_groups(_base32(device), 4)),
        uri=uri,
    )


@staff_member_required
def two_factor_verify(request: HttpRequest) -> HttpResponse:
    """Give the code of an enrolled authenticator app for this session."""
    user = request.user
    if user.is_verified():  # type: ignore[union-attr,attr-defined]
        return HttpResponseRedirect(_next_url(request))
    if not user_has_device(user, confirmed=True):
        return HttpResponseRedirect(
            f"{reverse('two-factor-setup')}?{_next_query(_next_url(request))}"
        )
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = match_token(user, form.cleaned_data["code"].strip())
        if device is not None:
            otp_login(request, device)
            return HttpResponseRedirect(_next_url(request))
        form.add_error("code", gettext("That code is not the one your app shows now."))
        record_security_event("second_factor_failed", user.get_username(), request)
    return _page(
        request,
        "admin/two_factor/verify.html",
        title=gettext_lazy("Two-factor sign-in"),
        form=form,
        has_app=TOTPDevice.objects.filter(user=user, confirmed=True).exists(),
        has_passkey=WebAuthnCredential.objects.filter(user=user, confirmed=True).exists(),
    )


def _base32(device: TOTPDevice) -> str:
    return b32encode(device.bin_key).decode()


def _groups(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# ----------------------------------------------------------------------------------------
# Passkeys and security keys (WebAuthn): django-otp-webauthn's ceremonies, under the
# two-factor pages and exempt from SecondFactorMiddleware like them (the ceremony is how a
# person gets past it). Its registration and verification views are wrapped only to audit
# their outcome like the authenticator app's; the cryptography, the challenges kept in the
# session and the origin and relying-party checks are the package's (py_webauthn's).

PASSKEY_PATH = "/admin/two-factor/passkey/"


class PasskeyRegistrationComplete(CompleteCredentialRegistrationView):
    def post(self, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().post(*args, **kwargs)
        user = self.request.user
        if response.status_code == 200:
            self.request.session[HAS_DEVICE_SESSION_KEY] = True
            record_security_event("second_factor_enrolled", user.get_username(), self.request)
        return response


class PasskeyVerificationComplete(CompleteCredentialAuthenticationView):
    def handle_exception(self, exc: Exception) -> HttpResponse:
        # A refused assertion (another key, a replayed or forged one, a wrong origin).
        if self.request.user.is_authenticated:
            record_security_event(
                "second_factor_failed", self.request.user.get_username(), self.request
            )
        response: HttpResponse = super().handle_exception(exc)
        return response


def _passkey_view(pattern: URLPattern) -> URLPattern:
    """The package's URL, our audited view for the two completions."""
    audited: dict[str, type[View]] = {
        "credential-registration-complete": PasskeyRegistrationComplete,
        "credential-authentication-complete": PasskeyVerificationComplete,
    }
    if pattern.name in audited:
        return path(str(pattern.pattern), audited[pattern.name].as_view(), name=pattern.name)
    return pattern


passkey_urls = (
    [_passkey_view(pattern) for pattern in webauthn_urls.urlpatterns],
    webauthn_urls.app_name,
)
