"""The security audit: who signed in (or failed to, or out), whose permissions and memberships
changed, who read which participant's record, who exported what. One `SecurityEvent` row
each, append-only (scheduler/appendonly), reviewed by auditors in the admin
(scheduler/admin/securityaudit.py).

- Sign-ins and sign-outs: Django's `user_logged_in` / `user_logged_out`.
- Failed sign-ins: Django's `user_login_failed`, with the username tried (never the
  password, which Django has already masked in the signal's credentials). Lockouts, sign-ins
  refused while locked and second-factor events are written by
  `scheduler.security.record_security_event` (django-axes' handlers call it).
- Permission changes: a user's groups and permissions, a group's permissions (m2m_changed),
  and a user's is_staff, is_superuser and is_active (saved). Memberships: granted, changed,
  revoked. The actor is the signed-in person of the request being served (simple-history's
  middleware holds it), "" for a command or the shell.
- Record views (`record_view`): the participant's admin page, its timeline, the emergency
  unblinding page, and the API's participant and calendar; one insert per request, never one
  per row of a list. An export (`record_export`) is one row with its filter and row count.

Nothing personal beyond the username: no password, no name or contact detail of anyone, no
treatment arm; a participant is its id; a place is the client's IP address (as django-axes
reads it, behind the TLS proxy).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, cast

from axes.helpers import get_client_ip_address
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import connections, router
from django.db.models import Field
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest
from django.utils import timezone
from simple_history.models import HistoricalRecords

from scheduler.models import Membership, SecurityEvent
from trials.models import Site, Trial

Kind = SecurityEvent.Kind
Surface = SecurityEvent.Surface
REVIEW_PERMISSION = "scheduler.review_security_audit"
# The account flags whose change is a permission change.
ACCOUNT_FLAGS = ("is_staff", "is_superuser", "is_active")


def client_ip(request: Any) -> str | None:
    """The client's IP address, or None when there is no request or no valid address."""
    if request is None:
        return None
    address = get_client_ip_address(request)
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def record(
    kind: str,
    *,
    username: str,
    request: Any,
    participant_id: int | None = None,
    surface: str = "",
    **detail: Any,
) -> SecurityEvent:
    """Write one entry of the security audit (one INSERT), now, in UTC."""
    return SecurityEvent.objects.create(
        at=timezone.now(),
        kind=kind,
        username=username,
        ip_address=client_ip(request),
        participant_id=participant_id,
        surface=surface,
        detail=detail,
    )


def _username(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return str(user.get_username())


def record_view(
    request: Any, *, participant_id: int | str, surface: str, page: str, response: Any = None
) -> None:
    """`request.user` read participant `participant_id`'s record on `page` of `surface`
    ("admin" or "api"). Given the response, only a page actually shown (200) is recorded."""
    if response is not None and response.status_code != 200:
        return
    _insert(
        at=timezone.now(),
        kind=Kind.VIEW,
        username=_username(request.user),
        ip_address=client_ip(request),
        participant_id=int(participant_id),
        surface=surface,
        detail={"page": page},
    )


def _insert(**values: Any) -> None:
    """The row `record` writes, as one plain INSERT: no model instance, no save signals, no
    RETURNING. A record view is written on every read of a participant's record (the API's
    calendar among them), where `objects.create` cost several times the INSERT itself."""
    connection = connections[router.db_for_write(SecurityEvent)]
    meta = SecurityEvent._meta
    fields = [cast("Field[Any, Any]", meta.get_field(name)) for name in values]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    params = [
        field.get_db_prep_save(value, connection)
        for field, value in zip(fields, values.values(), strict=True)
    ]
    table = quote(meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608  # nosec B608  # quoted names and placeholders only
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def record_views(
    request: Any, *, participant_ids: Iterable[int], surface: str, page: str, **detail: Any
) -> None:
    """`request.user` saw these participants on one page (a site's bookings board, say):
    one entry each, so a participant's reviewer finds it, written in one INSERT."""
    at, username, address = timezone.now(), _username(request.user), client_ip(request)
    SecurityEvent.objects.bulk_create(
        SecurityEvent(
            at=at,
            kind=Kind.VIEW,
            username=username,
            ip_address=address,
            participant_id=participant_id,
            surface=surface,
            detail={"page": page, **detail},
        )
        for participant_id in sorted(set(participant_ids))
    )


def record_export(request: HttpRequest, *, export: str, rows: int) -> None:
    """`request.user` exported `rows` rows of the `export` list filtered by the request's query
    string: one entry for the file, none per participant."""
    record(
        Kind.EXPORT,
        username=_username(request.user),
        request=request,
        surface=Surface.EXPORT,
        export=export,
        filter=request.GET.urlencode(),
        rows=rows,
    )


# ----------------------------------------------------------------------------------------
# Who may review it: holders of the "review_security_audit" permission (the "auditor" group
# that migration scheduler 0012 creates). A governance capability like managing users, not a
# trial role: an auditor holds no membership, so reads no clinical record and no arm.


def reviews_security_audit(user: Any) -> bool:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(user.has_perm(REVIEW_PERMISSION))


def security_events_for(user: Any) -> Any:
    """The security audit as the user may read it: all of it for an auditor, else nothing."""
    rows = SecurityEvent.objects.all()
    return rows if reviews_security_audit(user) else rows.none()


# ----------------------------------------------------------------------------------------
# Receivers (connected by `connect`, from SchedulerConfig.ready)


def _actor() -> tuple[str, Any]:
    """The signed-in person of the request being served, and the request (None outside one)."""
    request = getattr(HistoricalRecords.context, "request", None)
    return _username(getattr(request, "user", None)), request


def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(Kind.LOGIN, username=_username(user), request=request)


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(Kind.LOGOUT, username=_username(user), request=request)


def _login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    # Django has already replaced the password (and anything that looks like one) in
    # `credentials`; only the username is kept. A refusal while locked out is recorded by
    # scheduler/security.py as "locked_out_attempt".
    if request is not None and getattr(request, "axes_locked_out", False):
        return
    username = str(credentials.get("username") or "")[:150]
    path = request.path_info if request is not None else ""
    record(Kind.LOGIN_FAILED, username=username, request=request, path=path)


def _usernames(pks: Any) -> list[str]:
    User = get_user_model()
    return sorted(User.objects.filter(pk__in=pks).values_list(User.USERNAME_FIELD, flat=True))


def _permission_names(pks: Any) -> list[str]:
    return sorted(
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.filter(pk__in=pks).values_list(
            "content_type__app_label", "codename"
        )
    )


def _group_names(pks: Any) -> list[str]:
    return sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True))


M2M_ACTIONS = {"post_add": "added", "post_remove": "removed", "pre_clear": "cleared"}


def _m2m_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: Any, **kwargs: Any
) -> None:
    User = get_user_model()
    if action not in M2M_ACTIONS:
        return
    if action == "pre_clear":
        # Before the rows go, to name what is removed.
        pk_set = set(getattr(instance, _m2m_field(sender, instance)).values_list("pk", flat=True))
    if not pk_set:
        return
    names = (
        _usernames(pk_set)
        if model is User
        else _group_names(pk_set)
        if model is Group
        else _permission_names(pk_set)
    )
    owner: dict[str, Any]
    if isinstance(instance, Group):
        owner = {"group": instance.name}
    elif isinstance(instance, Permission):
        owner = {"permission": f"{instance.content_type.app_label}.{instance.codename}"}
    else:
        owner = {"user": _username_of(instance)}
    actor, request = _actor()
    record(
        Kind.PERMISSION_CHANGE,
        username=actor,
        request=request,
        **owner,
        change=f"{_m2m_field(sender, instance)} {M2M_ACTIONS[action]}",
        values=names,
    )


def _m2m_field(through: Any, instance: Any) -> str:
    """The name of the relation on `instance` whose through table is `through`."""
    User = get_user_model()
    if through is User.groups.through:
        return "groups" if isinstance(instance, User) else "user_set"
    if through is User.user_permissions.through:
        return "user_permissions" if isinstance(instance, User) else "user_set"
    return "permissions" if isinstance(instance, Group) else "group_set"


def _flags_before(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    # A sign-in saves last_login only: no extra query then.
    if instance.pk is None or (
        update_fields is not None and not set(update_fields) & set(ACCOUNT_FLAGS)
    ):
        return
    instance._audit_flags_before = (
        type(instance).objects.filter(pk=instance.pk).values(*ACCOUNT_FLAGS).first()
    )


def _flags_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, "_audit_flags_before", None)
    instance._audit_flags_before = None
    if created:
        before = dict.fromkeys(ACCOUNT_FLAGS, False) | {"is_active": True}
    if before is None:
        return
    changed = {
        flag: getattr(instance, flag)
        for flag in ACCOUNT_FLAGS
        if getattr(instance, flag) != before[flag]
    }
    if not changed:
        return
    actor, request = _actor()
    record(
        Kind.PERMISSION_CHANGE,
        username=actor,
        request=request,
        user=_username_of(instance),
        change="account created" if created else "account flags",
        values=[f"{flag}={value}" for flag, value in changed.items()],
    )


def _username_of(user: Any) -> str:
    return str(user.get_username())


def _membership_detail(membership: Membership) -> dict[str, Any]:
    User = get_user_model()
    username = (
        User.objects.filter(pk=membership.user_id)
        .values_list(User.USERNAME_FIELD, flat=True)
        .first()
    )
    trial = Trial.objects.filter(pk=membership.trial_id).values_list("code", flat=True).first()
    site = (
        Site.objects.filter(pk=membership.site_id).values_list("code", flat=True).first()
        if membership.site_id is not None
        else None
    )
    return {
        "user": username or "",
        "trial": trial or "",
        "site": site or "",
        "role": membership.role,
    }


def _membership_saved(sender: Any, instance: Membership, created: bool, **kwargs: Any) -> None:
    actor, request = _actor()
    record(
        Kind.MEMBERSHIP_CHANGE,
        username=actor,
        request=request,
        change="granted" if created else "changed",
        **_membership_detail(instance),
    )


def _membership_deleted(sender: Any, instance: Membership, **kwargs: Any) -> None:
    actor, request = _actor()
    record(
        Kind.MEMBERSHIP_CHANGE,
        username=actor,
        request=request,
        change="revoked",
        **_membership_detail(instance),
    )


def connect() -> None:
    """Connect the receivers (once: each has a dispatch uid)."""
    User = get_user_model()
    user_logged_in.connect(_logged_in, dispatch_uid="audittrail-login")
    user_logged_out.connect(_logged_out, dispatch_uid="audittrail-logout")
    user_login_failed.connect(_login_failed, dispatch_uid="audittrail-login-failed")
    for through in (User.groups.through, User.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_m2m_changed, sender=through, dispatch_uid=f"audittrail-{through}")
    pre_save.connect(_flags_before, sender=User, dispatch_uid="audittrail-flags-before")
    post_save.connect(_flags_saved, sender=User, dispatch_uid="audittrail-flags-saved")
    post_save.connect(_membership_saved, sender=Membership, dispatch_uid="audittrail-membership")
    post_delete.connect(
        _membership_deleted, sender=Membership, dispatch_uid="audittrail-membership-revoked"
    )
