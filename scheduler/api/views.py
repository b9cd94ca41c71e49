"""The API's views: thin. Each reads its rows through `scheduler.access` (another site's object
is simply not there: 404), and each operation is one view that calls one service.

Reads are GenericAPIViews with cursor pagination; operations follow HackSoft's one view per
use case with nested InputSerializer / result serializers, and every operation with a preview
shares `PreviewConfirm`: POST …/preview/ says what would happen and returns a digest of it, and
the confirm must carry that digest; what is written must be exactly what was previewed.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Prefetch, QuerySet
from django.db.models.functions import Coalesce
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from participants.forms import WEIGHT_MAX_KG, WEIGHT_MIN_KG, validate_birth_date
from participants.models import Participant, ParticipantAnchor
from participants.selectors import participant_eligibility_failures
from participants.services import participant_register
from scheduler import access, audittrail
from scheduler.api import serializers as out
from scheduler.api.errors import PreviewOutdated, Refused
from scheduler.api.idempotency import idempotent
from scheduler.api.jsonbodies import refuse_numbers_for_text
from scheduler.api.pagination import refuse_unknown_parameters
from scheduler.api.preconditions import participant_etag, require_if_match, visit_etag
from scheduler.calendars.feeds import feed_create, feed_public_url, feed_revoke
from scheduler.models import CalendarFeed, Reminder, ScheduledProcedure, ScheduledVisit
from scheduler.outbox.sweep import reminders_retry
from scheduler.selectors import (
    protocol_catalog,
    rows_share_related,
    visit_glance_status,
    visits_attach_procedures,
)
from scheduler.services import (
    Enrollment,
    EnrollmentError,
    participant_anchor_change,
    participant_anchor_change_preview,
    participant_complete,
    participant_enroll,
    participant_move_to_version,
    participant_move_to_version_preview,
    participant_withdraw,
    participants_enroll,
    site_move_to_version,
    site_move_to_version_preview,
    taper_adjust,
    taper_adjust_preview,
    visit_add_unscheduled,
    visit_book,
    visit_book_preview,
    visit_cancel,
    visit_mark_missed,
    visit_record_done,
    visit_record_done_preview,
)
from trials.models import Arm, ProtocolVersion, Site, Trial, TrialSite, iana_zones
from trials.services import protocol_document

IF_MATCH_PARAM = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="The ETag of the object as you last read it (412 if it changed since).",
)
IDEMPOTENCY_PARAM = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="A new unique value per request (a UUID); a retry with the same key and body "
    "returns the first response and does nothing twice.",
)


IF_MATCH_OPTIONAL_PARAM = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Optional: the ETag you last read; 412 if the object changed since.",
)
NO_IDEMPOTENCY_PARAM = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, exclude=True
)


def validated(serializer_class: type[serializers.Serializer[Any]], data: Any) -> dict[str, Any]:
    """`data` (a body, or a query string's values) as `serializer_class` validates it: a 400
    naming each bad field, a JSON number given for text among them (jsonbodies)."""
    serializer = serializer_class(data=data)
    refuse_numbers_for_text(serializer, data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _query(
    serializer_class: type[serializers.Serializer[Any]], request: Request, *, paged: bool = False
) -> dict[str, Any]:
    """The query string, validated by `serializer_class`. Unknown or repeated parameters are
    refused (`refuse_unknown_parameters`); `paged`: a list's, whose paginator refuses them
    (with PAGING and its view's `query_serializer`), so they are not looked at twice."""
    if not paged:
        refuse_unknown_parameters(request, {*serializer_class().fields, "format"})
    return validated(serializer_class, request.query_params.dict())


def _field_error(field: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({field: [message]})


class _SiteToday:
    """Each site's today, computed once per response (a list spans sites and zones)."""

    def __init__(self) -> None:
        self._by_site: dict[int, dt.date] = {}

    def __call__(self, site: Site) -> dt.date:
        if site.pk not in self._by_site:
            self._by_site[site.pk] = access.site_today(site)
        return self._by_site[site.pk]

    def glance(self, visit: ScheduledVisit) -> str:
        return visit_glance_status(visit, today=self(visit.participant.site))


# ----------------------------------------------------------------------------------------
# Trials, protocol versions, sites


def _trials(request: Request) -> QuerySet[Trial]:
    return access.trials_for(request.user)


def _trial(request: Request, code: str) -> Trial:
    trial = _trials(request).filter(code=code).first()
    if trial is None:
        raise exceptions.NotFound("no such trial")
    return trial


class TrialList(generics.ListAPIView[Trial]):
    """Trials of the caller's memberships."""

    serializer_class = out.TrialOut
    ordering = ("code",)

    def get_queryset(self) -> QuerySet[Trial]:
        return _trials(self.request)


class TrialDetail(generics.GenericAPIView[Trial]):
    serializer_class = out.TrialOut

    def get(self, request: Request, code: str) -> Response:
        return Response(out.TrialOut(_trial(request, code)).data)


def _published(trial: Trial) -> QuerySet[ProtocolVersion]:
    return ProtocolVersion.objects.filter(
        trial=trial, status=ProtocolVersion.Status.PUBLISHED
    ).order_by("published_at", "id")


class ProtocolVersionList(generics.GenericAPIView[ProtocolVersion]):
    """The trial's published protocol versions, oldest first."""

    serializer_class = out.ProtocolVersionOut
    pagination_class = None

    @extend_schema(responses=out.ProtocolVersionOut(many=True))
    def get(self, request: Request, code: str) -> Response:
        versions = _published(_trial(request, code))
        return Response(out.ProtocolVersionOut(versions, many=True).data)


def schedule_data(version: ProtocolVersion) -> dict[str, Any]:
    """A protocol version's schedule of activities as data: the file's content, with each
    visit's procedures and their durations spelled out."""
    document = protocol_document(version=version)
    procedures = {p.code: p for p in document.procedures}

    def anchor(ref: Any) -> dict[str, Any]:
        if isinstance(ref, str):
            return {"anchor": ref, "visit": None, "occurrence": None}
        return {"anchor": None, "visit": ref.visit, "occurrence": ref.occurrence}

    return {
        "trial": document.trial.code,
        "label": document.version.label,
        "version_date": document.version.date,
        "anchors": [a.model_dump(mode="json") for a in document.anchors],
        "arms": [{"code": a.code, "name": a.name} for a in document.arms],
        "epochs": [{"code": e.code, "name": e.name} for e in document.epochs],
        "procedures": [p.model_dump(mode="json") for p in document.procedures],
        "visits": [
            {
                "code": v.code,
                "name": v.name,
                "epoch": v.epoch,
                "anchor": anchor(v.anchor),
                "offset_days": v.offset_days,
                "window": {"before": v.window.before, "after": v.window.after},
                "repeat": v.repeat.model_dump(mode="json") if v.repeat else None,
                "duration_minutes": v.duration_minutes,
                "mode": str(v.mode),
                "arms": list(v.arms),
                "unscheduled_allowed": v.unscheduled_allowed,
                "procedures": [
                    {
                        "procedure": a.procedure,
                        "name": procedures[a.procedure].name,
                        "duration_minutes": procedures[a.procedure].duration_minutes,
                        "occurrences": list(a.occurrences) if a.occurrences else None,
                    }
                    for a in v.activities()
                ],
            }
            for v in document.visits
        ],
        "milestones": [
            {
                "code": m.code,
                "name": m.name,
                "kind": str(m.kind),
                "anchor": anchor(m.anchor),
                "offset_days": m.offset_days,
                "participant_facing": m.participant_facing,
                "taper": m.taper.model_dump(mode="json") if m.taper else None,
            }
            for m in document.milestones
        ],
        "eligibility": [
            {
                "code": c.code,
                "kind": str(c.kind),
                "text": c.text,
                "check": c.check.model_dump(mode="json") if c.check else None,
            }
            for c in document.eligibility
        ],
    }


class ProtocolVersionDetail(generics.GenericAPIView[ProtocolVersion]):
    """One published version with its schedule of activities."""

    serializer_class = out.ScheduleOut

    def get(self, request: Request, code: str, label: str) -> Response:
        version = _published(_trial(request, code)).filter(label=label).first()
        if version is None:
            raise exceptions.NotFound("no such published protocol version")
        return Response(out.ScheduleOut(schedule_data(version)).data)


class SiteList(generics.ListAPIView[Site]):
    """Sites where the caller reads calendars."""

    serializer_class = out.SiteOut
    ordering = ("code",)

    def get_queryset(self) -> QuerySet[Site]:
        return access.sites_for(self.request.user)

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "today": _SiteToday()}


class SiteDetail(generics.GenericAPIView[Site]):
    serializer_class = out.SiteOut

    def get(self, request: Request, code: str) -> Response:
        site = access.sites_for(request.user).filter(code=code).first()
        if site is None:
            raise exceptions.NotFound("no such site")
        return Response(out.SiteOut(site, context={"today": _SiteToday()}).data)


# ----------------------------------------------------------------------------------------
# Participants


def _participants(user: Any, *, write: bool = False, anchors: bool = True) -> QuerySet[Participant]:
    participants = access.participants_for(user, write=write).select_related(
        "trial", "site", "protocol_version"
    )
    return participants.prefetch_related("anchors") if anchors else participants


def present_participants(request: Request, participants: list[Participant]) -> dict[str, Any]:
    """The serializer context: contact details and arms only where the caller may see them.

    Arms are selected only for the participants whose arm the caller may see: in a blinded
    trial a blinded role's request never reads a treatment assignment at all.
    """
    user = request.user
    visible = [p.pk for p in participants if access.can_see_arm(user, trial=p.trial, site=p.site)]
    arms = (
        dict(
            access.assignments_for(user)
            .filter(participant_id__in=visible)
            .values_list("participant_id", "arm__code")
        )
        if visible
        else {}
    )
    return {
        "request": request,
        "arms": arms,
        "show_contact": lambda p: access.can_see_contact_details(
            user, trial_id=p.trial_id, site_id=p.site_id
        ),
    }


def _participant_response(
    request: Request, participant: Participant, *, status_code: int = 200, **extra: Any
) -> Response:
    participant = _participants(request.user).get(pk=participant.pk)
    data = out.ParticipantOut(participant, context=present_participants(request, [participant]))
    return Response(
        {**data.data, **extra},
        status=status_code,
        headers={"ETag": participant_etag(participant)},
    )


CHANGED_SINCE_HELP = (
    "Only what changed at or after this instant (ISO 8601 with its zone, e.g. "
    "2026-03-01T00:00:00Z; a '+' of an offset sent as %2B), by the audit trail: {what}. "
    "Nothing is ever deleted (a cancelled visit, a withdrawn participant comes with its "
    "status). A change is stamped when it is made and seen once its transaction commits, "
    "seconds later at most (a site's amendment, about a minute): ask from when your previous "
    "read began, less ten minutes; reading a row twice is harmless."
)


def _changed_since(
    queryset: QuerySet[Any], since: dt.datetime, *histories: tuple[Any, str]
) -> QuerySet[Any]:
    """The rows of `queryset` with an audit entry made at or after `since`: their own or one
    of their parts' (`histories`: each a model whose history counts, and its field that holds
    the row's key). Every change writes one (the audit trail is complete by construction), so
    nothing else needs to be kept in step with the writes."""
    changed = [
        Exists(
            model.history.model.objects.filter(
                **{field: OuterRef("pk"), "history_date__gte": since}
            )
        )
        for model, field in histories
    ]
    condition: Any = changed[0]
    for other in changed[1:]:
        condition = condition | other
    return queryset.filter(condition)


class ParticipantFilter(serializers.Serializer[Any]):
    trial = serializers.CharField(required=False, max_length=40)
    site = serializers.CharField(required=False, max_length=40)
    status = serializers.ChoiceField(choices=Participant.Status.choices, required=False)
    changed_since = out.InstantField(
        required=False,
        help_text=CHANGED_SINCE_HELP.format(
            what="a participant whose record (status, dates, contact, version) or anchors changed"
        ),
    )


LANGUAGES = Participant.Language.choices


class ParticipantRegisterInput(serializers.Serializer[Any]):
    trial = serializers.CharField(max_length=40)
    site = serializers.CharField(max_length=40)
    study_id = serializers.CharField(max_length=40)
    birth_date = out.BoundedDateField(validators=[validate_birth_date])
    anchors = serializers.DictField(
        child=out.BoundedDateField(), required=False, help_text="Anchor code -> date."
    )
    weight_kg = serializers.DecimalField(
        max_digits=5,
        decimal_places=1,
        min_value=WEIGHT_MIN_KG,
        max_value=WEIGHT_MAX_KG,
        required=False,
        allow_null=True,
    )
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    guardian_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    guardian_email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    guardian_phone = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=40,
        help_text="A minor's SMS go here (else to `phone`).",
    )
    reminder_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=["email", "sms"]), required=False, max_length=2
    )
    reminders_opt_out = serializers.BooleanField(required=False)
    quiet_hours_start = serializers.TimeField(required=False, allow_null=True)
    quiet_hours_end = serializers.TimeField(required=False, allow_null=True)
    timezone = serializers.ChoiceField(choices=sorted(iana_zones()), required=False)
    language = serializers.ChoiceField(choices=LANGUAGES, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs.get("quiet_hours_start") is None) != (attrs.get("quiet_hours_end") is None):
            raise serializers.ValidationError(
                {"quiet_hours_end": ["quiet hours need both a start and an end, or neither"]}
            )
        return attrs


@extend_schema_view(
    get=extend_schema(parameters=[ParticipantFilter]),
    post=extend_schema(
        request=ParticipantRegisterInput,
        responses={201: out.ParticipantOut},
        parameters=[IDEMPOTENCY_PARAM],
        summary="Register a participant in screening",
    ),
)
class ParticipantList(generics.ListAPIView[Participant]):
    """Participants the caller reads (GET); register one in screening (POST, a write role at
    that trial and site)."""

    serializer_class = out.ParticipantOut
    ordering = ("id",)
    query_serializer = ParticipantFilter

    def get_queryset(self) -> QuerySet[Participant]:
        filters = _query(ParticipantFilter, self.request, paged=True)
        queryset = _participants(self.request.user)
        if "trial" in filters:
            queryset = queryset.filter(trial__code=filters["trial"])
        if "site" in filters:
            queryset = queryset.filter(site__code=filters["site"])
        if "status" in filters:
            queryset = queryset.filter(status=filters["status"])
        if "changed_since" in filters:
            queryset = _changed_since(
                queryset,
                filters["changed_since"],
                (Participant, "id"),
                (ParticipantAnchor, "participant_id"),
            )
        return queryset

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None
        context = present_participants(request, page)
        return self.get_paginated_response(
            out.ParticipantOut(page, many=True, context=context).data
        )

    def post(self, request: Request) -> Response:
        return idempotent(request, lambda: self._register(request))

    def _register(self, request: Request) -> Response:
        data = validated(ParticipantRegisterInput, request.data)
        trial = _trials(request).filter(code=data.pop("trial")).first()
        if trial is None:
            raise _field_error("trial", "no such trial")
        site = access.sites_for(request.user).filter(code=data.pop("site")).first()
        if site is None or not access.can_read_at(request.user, trial=trial, site=site):
            raise _field_error("site", "no such site of this trial")
        if not access.can_write_at(request.user, trial=trial, site=site):
            raise exceptions.PermissionDenied("your role may not register participants here")
        start, end = data.pop("quiet_hours_start", None), data.pop("quiet_hours_end", None)
        participant = participant_register(
            trial=trial,
            site=site,
            anchors=data.pop("anchors", {}),
            quiet_hours=(start, end) if start is not None and end is not None else None,
            by=request.user,
            **data,
        )
        response = _participant_response(request, participant, status_code=201)
        response["Location"] = f"/api/v1/participants/{participant.pk}/"
        return response


def _readable_participant(request: Request, pk: int, *, anchors: bool = True) -> Participant:
    participant = _participants(request.user, anchors=anchors).filter(pk=pk).first()
    if participant is None:
        raise exceptions.NotFound("no such participant")
    return participant


def _writable_participant(request: Request, pk: int) -> Participant:
    """The participant, locked, if the caller may change it: 404 if they cannot see it, 403 if
    they only read it."""
    participant = (
        access.participants_for(request.user, write=True)
        .select_for_update()
        .select_related("trial", "site", "protocol_version")
        .filter(pk=pk)
        .first()
    )
    if participant is None:
        _readable_participant(request, pk)
        raise exceptions.PermissionDenied("your role may read this participant but not change it")
    return participant


class ParticipantDetail(generics.GenericAPIView[Participant]):
    serializer_class = out.ParticipantOut

    def get(self, request: Request, pk: int) -> Response:
        participant = _readable_participant(request, pk)
        audittrail.record_view(
            request, participant_id=participant.pk, surface="api", page="participant"
        )
        return _participant_response(request, participant)


class EligibilityQuery(serializers.Serializer[Any]):
    on = out.BoundedDateField(required=False, help_text="Default: the site's today.")


class EligibilityOut(serializers.Serializer[Any]):
    on = serializers.DateField()
    eligible = serializers.BooleanField()
    failures = serializers.ListField(child=serializers.CharField())


class ParticipantEligibility(generics.GenericAPIView[Participant]):
    """Machine-checkable eligibility criteria the participant fails on a date."""

    serializer_class = EligibilityOut

    @extend_schema(parameters=[EligibilityQuery])
    def get(self, request: Request, pk: int) -> Response:
        participant = _readable_participant(request, pk)
        on = _query(EligibilityQuery, request).get("on") or access.site_today(participant.site)
        failures = participant_eligibility_failures(participant=participant, on=on)
        return Response(
            EligibilityOut(
                {"on": on, "eligible": not failures, "failures": [str(f) for f in failures]}
            ).data
        )


class ParticipantOperation(APIView):
    """One use case on one participant: If-Match on its ETag, once per Idempotency-Key."""

    InputSerializer: ClassVar[type[serializers.Serializer[Any]]]

    def post(self, request: Request, pk: int) -> Response:
        return idempotent(request, lambda: self._act(request, pk))

    def _act(self, request: Request, pk: int) -> Response:
        with transaction.atomic():
            participant = _writable_participant(request, pk)
            data = validated(self.InputSerializer, request.data)
            require_if_match(request, participant_etag(participant))
            extra = self.perform(request, participant, data)
            return _participant_response(request, participant, **extra)

    def perform(
        self, request: Request, participant: Participant, data: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError


class ParticipantEnroll(ParticipantOperation):
    """Enroll a participant in screening: the whole calendar is planned."""

    class InputSerializer(serializers.Serializer[Any]):
        on = out.BoundedDateField(help_text="The enrollment date (eligibility is checked on it).")
        arm = serializers.CharField(
            required=False,
            max_length=40,
            help_text="The randomised arm's code; only a role that may see arms may send it.",
        )

    def perform(
        self, request: Request, participant: Participant, data: dict[str, Any]
    ) -> dict[str, Any]:
        arm, faults = _enrollment_faults(
            request,
            participant,
            data,
            today=access.site_today(participant.site),
            arms=lambda code: Arm.objects.filter(
                version=participant.protocol_version, code=code
            ).first(),
        )
        if faults:
            raise exceptions.ValidationError(faults)
        visits = participant_enroll(
            participant=participant, on=data["on"], arm=arm, by=request.user
        )
        return {"visits_planned": len(visits)}


def _enrollment_faults(
    request: Request,
    participant: Participant,
    data: dict[str, Any],
    *,
    today: dt.date,
    arms: Callable[[str], Arm | None],
) -> tuple[Arm | None, dict[str, list[str]]]:
    """The arm an enrollment request names (`data`: `on`, and `arm` if given), and what is
    wrong with it, by field: `today` the participant's site's, `arms` the arm of their
    version with a code."""
    faults: dict[str, list[str]] = {}
    if data["on"] > today:
        # Eligibility is checked on `on` (age among it): a day to come would enroll today
        # someone who does not qualify today.
        faults["on"] = [
            f"an enrollment is dated on or before the site's today ({today}), not later"
        ]
    arm = None
    if "arm" in data:
        if not access.can_see_arm(request.user, trial=participant.trial, site=participant.site):
            faults["arm"] = ["your role may not assign the arm in this trial"]
        else:
            arm = arms(data["arm"])
            if arm is None:
                faults["arm"] = [f"no arm {data['arm']!r} in this protocol version"]
    return arm, faults


class ParticipantWithdraw(ParticipantOperation):
    """Withdraw: open visits and planned milestones on or after the date are cancelled."""

    class InputSerializer(serializers.Serializer[Any]):
        on = out.BoundedDateField()
        reason = serializers.CharField(max_length=2000)

    def perform(
        self, request: Request, participant: Participant, data: dict[str, Any]
    ) -> dict[str, Any]:
        closure = participant_withdraw(
            participant=participant, on=data["on"], by=request.user, reason=data["reason"]
        )
        return {
            "cancelled_visits": [v.code for v in closure.cancelled_visits],
            "cancelled_milestones": [str(m.rule.code) for m in closure.cancelled_milestones],
        }


class ParticipantComplete(ParticipantOperation):
    """Mark an enrolled participant with no open visits as having completed the study."""

    class InputSerializer(serializers.Serializer[Any]):
        on = out.BoundedDateField()
        reason = serializers.CharField(max_length=2000, required=False)

    def perform(
        self, request: Request, participant: Participant, data: dict[str, Any]
    ) -> dict[str, Any]:
        participant_complete(participant=participant, by=request.user, **data)
        return {}


class EnrollOut(out.ParticipantOut):
    visits_planned = serializers.IntegerField()

    class Meta(out.ParticipantOut.Meta):
        fields = [*out.ParticipantOut.Meta.fields, "visits_planned"]


class WithdrawOut(out.ParticipantOut):
    cancelled_visits = serializers.ListField(child=serializers.CharField())
    cancelled_milestones = serializers.ListField(child=serializers.CharField())

    class Meta(out.ParticipantOut.Meta):
        fields = [*out.ParticipantOut.Meta.fields, "cancelled_visits", "cancelled_milestones"]


for _view, _output in (
    (ParticipantEnroll, EnrollOut),
    (ParticipantWithdraw, WithdrawOut),
    (ParticipantComplete, out.ParticipantOut),
):
    extend_schema_view(
        post=extend_schema(
            request=_view.InputSerializer,
            responses=_output,
            parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
        )
    )(_view)


# A cohort enrolled in one request: one transaction, so a batch stays well inside a request's
# time (about 7 ms a JASMINE participant on the development machine, bench/enroll.py).
ENROLLMENT_BATCH_MAX = 500


class EnrollmentItem(serializers.Serializer[Any]):
    participant = serializers.IntegerField(min_value=1, help_text="The participant's id.")
    on = out.BoundedDateField(help_text="The enrollment date (eligibility is checked on it).")
    arm = serializers.CharField(
        required=False,
        max_length=40,
        help_text="The randomised arm's code; only a role that may see arms may send it.",
    )


class EnrollmentBatchInput(serializers.Serializer[Any]):
    enrollments = serializers.ListField(
        child=EnrollmentItem(), min_length=1, max_length=ENROLLMENT_BATCH_MAX
    )


class EnrolledOut(serializers.Serializer[Any]):
    participant = serializers.IntegerField()
    study_id = serializers.CharField()
    visits_planned = serializers.IntegerField()


class EnrollmentBatchOut(serializers.Serializer[Any]):
    enrolled = EnrolledOut(many=True)


class EnrollmentBatch(APIView):
    """Enroll a cohort of participants in screening at once, all or none: what
    `participants/{id}/enroll/` does for each, in one transaction. Any one refused refuses
    the batch; the answer names each item refused (`enrollments.N…`) and why."""

    @extend_schema(
        request=EnrollmentBatchInput,
        responses=EnrollmentBatchOut,
        parameters=[IDEMPOTENCY_PARAM],
    )
    def post(self, request: Request) -> Response:
        return idempotent(request, lambda: self._enroll(request))

    def _enroll(self, request: Request) -> Response:
        items = validated(EnrollmentBatchInput, request.data)["enrollments"]
        errors: dict[str, list[str]] = {}
        first_index: dict[int, int] = {}
        for index, item in enumerate(items):
            if item["participant"] in first_index:
                errors[f"enrollments.{index}.participant"] = [
                    f"participant {item['participant']} is already item "
                    f"{first_index[item['participant']]} of this batch"
                ]
            else:
                first_index[item["participant"]] = index
        with transaction.atomic():
            ids = list(first_index)
            writable = {
                participant.pk: participant
                for participant in access.participants_for(request.user, write=True)
                .select_for_update(of=("self",))
                .select_related("trial", "site", "protocol_version")
                .filter(pk__in=ids)
            }
            readable = set(
                access.participants_for(request.user)
                .filter(pk__in=[pk for pk in ids if pk not in writable])
                .values_list("pk", flat=True)
            )
            version_arms = {
                (arm.version_id, arm.code): arm
                for arm in Arm.objects.filter(
                    version__in={p.protocol_version_id for p in writable.values()},
                    code__in={item["arm"] for item in items if "arm" in item},
                )
            }
            today = _SiteToday()
            enrollments: list[Enrollment] = []
            for index, item in enumerate(items):
                if first_index.get(item["participant"]) != index:
                    continue
                where = f"enrollments.{index}"
                participant = writable.get(item["participant"])
                if participant is None:
                    errors[f"{where}.participant"] = [
                        "your role may read this participant but not change it"
                        if item["participant"] in readable
                        else f"no participant {item['participant']} that you may see"
                    ]
                    continue
                arm, faults = _enrollment_faults(
                    request,
                    participant,
                    item,
                    today=today(participant.site),
                    # Called here, in this participant's turn of the loop.
                    arms=lambda code: version_arms.get((participant.protocol_version_id, code)),  # noqa: B023
                )
                errors.update((f"{where}.{field}", words) for field, words in faults.items())
                enrollments.append(Enrollment(participant, item["on"], arm))
            if errors:
                raise exceptions.ValidationError(errors)
            try:
                planned = participants_enroll(enrollments=enrollments, by=request.user)
            except EnrollmentError as refusal:
                raise Refused(
                    f"{len(refusal.refused)} of the {len(items)} participants cannot be "
                    "enrolled; none was",
                    errors=[
                        {"field": f"enrollments.{first_index[participant.pk]}", "message": problem}
                        for participant, problems in refusal.refused
                        for problem in problems
                    ],
                ) from None
            enrolled = [
                {
                    "participant": enrollment.participant.pk,
                    "study_id": enrollment.participant.study_id,
                    "visits_planned": planned[enrollment.participant.pk],
                }
                for enrollment in enrollments
            ]
        return Response({"enrolled": enrolled}, status=status.HTTP_200_OK)


# ----------------------------------------------------------------------------------------
# Visits and calendars


_PARTICIPANT_OF_VISIT = ("participant__trial", "participant__site")


def _visits_procedures() -> Any:
    # Into a list (to_attr), not the related manager: Django clones the prefetch's queryset
    # for every visit to fill a manager, which for a page of 200 visits cost more than
    # everything else in the response (bench/api.py).
    # The procedures themselves are few (a protocol's dozen): fetched once each, not joined
    # into each of a page's thousand scheduled procedures.
    return Prefetch(
        "procedures",
        queryset=ScheduledProcedure.objects.order_by("procedure__order", "id").prefetch_related(
            "procedure"
        ),
        to_attr=ScheduledVisit.PROCEDURES_IN_ORDER,
    )


_DEFINITION_OF_VISIT = ("visit_definition", "protocol_version")


def _visits(
    queryset: QuerySet[ScheduledVisit], *, many: bool = True, procedures: bool = True
) -> QuerySet[ScheduledVisit]:
    """Visits with what VisitOut reads of them, in a fixed number of queries.

    For many visits, the participant (with trial and site), the visit definition and the
    protocol version are fetched once each (prefetch), not joined into every row: a join
    builds a participant, trial, site, definition and version for each visit, which for a
    60-visit calendar was 300 model instances and most of the response's time (bench/api.py).
    For one visit a join is the cheaper read. With procedures=False the procedures are left
    to `visits_attach_procedures`, once the visits are read (the list does, after its page).
    """
    if not many:
        return queryset.select_related(
            *_PARTICIPANT_OF_VISIT, *_DEFINITION_OF_VISIT
        ).prefetch_related(_visits_procedures())
    participants = Prefetch(
        "participant", queryset=Participant.objects.select_related("trial", "site")
    )
    lookups: list[Any] = [participants, *_DEFINITION_OF_VISIT]
    if procedures:
        lookups.append(_visits_procedures())
    return queryset.prefetch_related(*lookups)


class CalendarView(generics.GenericAPIView[Participant]):
    """A participant's calendar: visits with windows, procedures, status at a glance and
    deviations; milestones, with the taper's daily doses."""

    serializer_class = out.CalendarOut

    def get(self, request: Request, pk: int) -> Response:
        # Not its anchors: the calendar does not show them (the participant's own page does).
        participant = _readable_participant(request, pk, anchors=False)
        audittrail.record_view(
            request, participant_id=participant.pk, surface="api", page="calendar"
        )
        today = _SiteToday()
        # The participant is read already: its visits share it instead of fetching it again,
        # and its protocol version, which is most visits' version. That version's
        # definitions, procedures and rules are read once per process (a published one);
        # those of an earlier version (visits kept by a move) in one query each, only if any.
        version = participant.protocol_version
        definitions, procedures, rules = protocol_catalog(version=version)
        visits = list(
            access.visits_for(request.user)
            .filter(participant=participant)
            .order_by("target_date", "id")
        )
        rows_share_related(visits, "visit_definition", known=definitions.values())
        visits_attach_procedures(visits, known=procedures.values())
        rows_share_related(visits, "protocol_version", known=[version])
        for visit in visits:
            visit.participant = participant
        milestones = list(
            access.milestones_for(request.user)
            .filter(participant=participant)
            .order_by("due_date", "sequence", "id")
        )
        rows_share_related(milestones, "rule", known=rules.values())
        data = {
            "participant": participant.pk,
            "study_id": participant.study_id,
            "site": participant.site.code,
            "site_today": today(participant.site),
            "visits": visits,
            "milestones": milestones,
            "taper_doses": [m for m in milestones if m.dose_mg is not None],
        }
        return Response(
            out.CalendarOut(data, context={"glance": today.glance, "request": request}).data
        )


STATUSES = [s.value for s in ScheduledVisit.Status]


class VisitFilter(serializers.Serializer[Any]):
    site = serializers.CharField(required=False, max_length=40, help_text="Site code.")
    trial = serializers.CharField(required=False, max_length=40, help_text="Trial code.")
    participant = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    locals()["from"] = out.BoundedDateField(
        required=False,
        help_text="On or after this day: the actual date if done, the booked date if booked, "
        "else the target date.",
    )
    to = out.BoundedDateField(required=False, help_text="On or before this day (inclusive).")
    status = serializers.CharField(
        required=False,
        max_length=100,
        help_text=f"Recorded status, comma-separated: {', '.join(STATUSES)}.",
    )
    procedure = serializers.CharField(
        required=False, max_length=40, help_text="Only visits carrying this procedure code."
    )
    changed_since = out.InstantField(
        required=False,
        help_text=CHANGED_SINCE_HELP.format(
            what="a visit whose record (dates, booking, status) or procedures changed"
        ),
    )

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = sorted(set(statuses) - set(STATUSES))
        if unknown:
            raise serializers.ValidationError(
                f"unknown status {', '.join(unknown)}; one of {', '.join(STATUSES)}"
            )
        return statuses

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "from" in attrs and "to" in attrs and attrs["from"] > attrs["to"]:
            raise serializers.ValidationError({"to": ["must be on or after 'from'"]})
        return attrs


@extend_schema_view(get=extend_schema(parameters=[VisitFilter]))
class VisitList(generics.ListAPIView[ScheduledVisit]):
    """Visits the caller reads, by site, trial, participant, day range, status and procedure:
    e.g. every FDGPET at one site next week."""

    serializer_class = out.VisitOut
    # By id, not by day: a visit booked or moved between two pages keeps its place, so paging
    # through the list shows every visit once (filter by `from`/`to` for a day range).
    ordering = ("id",)
    query_serializer = VisitFilter

    def get_queryset(self) -> QuerySet[ScheduledVisit]:
        filters = _query(VisitFilter, self.request, paged=True)
        queryset = access.visits_for(self.request.user).annotate(
            day=Coalesce(F("actual_date"), F("booked_date"), F("target_date"))
        )
        if "site" in filters:
            queryset = queryset.filter(participant__site__code=filters["site"])
        if "trial" in filters:
            queryset = queryset.filter(participant__trial__code=filters["trial"])
        if "participant" in filters:
            queryset = queryset.filter(participant_id=filters["participant"])
        if "from" in filters:
            queryset = queryset.filter(day__gte=filters["from"])
        if "to" in filters:
            queryset = queryset.filter(day__lte=filters["to"])
        if "status" in filters:
            queryset = queryset.filter(status__in=filters["status"])
        if "procedure" in filters:
            queryset = queryset.filter(
                Exists(
                    ScheduledProcedure.objects.filter(
                        visit=OuterRef("pk"), procedure__code=filters["procedure"]
                    )
                )
            )
        if "changed_since" in filters:
            queryset = _changed_since(
                queryset,
                filters["changed_since"],
                (ScheduledVisit, "id"),
                (ScheduledProcedure, "visit_id"),
            )
        return _visits(queryset, procedures=False)

    def paginate_queryset(self, queryset: Any) -> Any:
        # The page's procedures, once its visits are read (see `visits_attach_procedures`).
        page = super().paginate_queryset(queryset)
        return None if page is None else visits_attach_procedures(list(page))

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "glance": _SiteToday().glance}


def _readable_visit(request: Request, pk: int) -> ScheduledVisit:
    visit = _visits(access.visits_for(request.user), many=False).filter(pk=pk).first()
    if visit is None:
        raise exceptions.NotFound("no such visit")
    return visit


def _writable_visit(request: Request, pk: int) -> ScheduledVisit:
    visit = _visits(access.visits_for(request.user, write=True), many=False).filter(pk=pk).first()
    if visit is None:
        _readable_visit(request, pk)
        raise exceptions.PermissionDenied("your role may read this visit but not change it")
    return visit


def _visit_data(request: Request, visit: ScheduledVisit) -> dict[str, Any]:
    return dict(out.VisitOut(visit, context={"glance": _SiteToday().glance}).data)


class VisitDetail(generics.GenericAPIView[ScheduledVisit]):
    serializer_class = out.VisitOut

    def get(self, request: Request, pk: int) -> Response:
        visit = _readable_visit(request, pk)
        return Response(_visit_data(request, visit), headers={"ETag": visit_etag(visit)})


class PreviewConfirm(APIView):
    """A preview and its confirm, written once (HackSoft's one view per operation).

    The target (a visit, a participant) must be one the caller may change: 404 if they cannot
    see it, 403 if they only read it. POST …/preview/ says what would happen and returns a
    digest of it (If-Match optional); the confirm needs If-Match (the target's ETag) and an
    Idempotency-Key, and, where there is a preview, carries its digest: what is written must
    be exactly what was previewed, or nothing is (409). Subclasses name the target
    (`load_target`, `target_etag`, `present_target`) and the use case (`preview`, `confirm`).
    """

    InputSerializer: ClassVar[type[serializers.Serializer[Any]]]
    ResultSerializer: ClassVar[type[serializers.Serializer[Any]]]
    target_name: ClassVar[str]
    has_preview: ClassVar[bool] = False
    is_preview: ClassVar[bool] = False

    def post(self, request: Request, **kwargs: Any) -> Response:
        if self.is_preview:
            with transaction.atomic():  # the target is read as it is locked for a change
                return self._preview(request, kwargs)
        return idempotent(request, lambda: self._confirm(request, kwargs))

    # The preview's input, without what only the confirm carries.
    def preview_input(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k in self.preview_fields()}

    def preview_fields(self) -> set[str]:
        return set(self.InputSerializer().fields) - {"reason", "preview_digest"}

    def _digest(
        self, etag: str, kwargs: dict[str, Any], data: dict[str, Any], result: dict[str, Any]
    ) -> str:
        text = json.dumps(
            {"etag": etag, "path": kwargs, "input": self.preview_input(data), "result": result},
            sort_keys=True,
            cls=DjangoJSONEncoder,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _preview(self, request: Request, kwargs: dict[str, Any]) -> Response:
        target = self.load_target(request, kwargs)
        data = validated(preview_input(type(self)), request.data)
        etag = self.target_etag(target)
        # Optional here: a preview writes nothing. "*" (any version) asks for no check.
        if request.headers.get("If-Match", "").strip() not in ("", "*"):
            require_if_match(request, etag)
        result = self._plain(self.preview(target, data))
        return Response(
            {
                f"{self.target_name}_etag": etag,
                "preview_digest": self._digest(etag, kwargs, data, result),
                "result": result,
            },
            headers={"ETag": etag},
        )

    def _confirm(self, request: Request, kwargs: dict[str, Any]) -> Response:
        target = self.load_target(request, kwargs)
        data = validated(self.InputSerializer, request.data)
        etag = self.target_etag(target)
        require_if_match(request, etag)
        with transaction.atomic():
            result = self._plain(self.confirm(target, data, by=request.user))
            digest = self._digest(etag, kwargs, data, result)
            if self.has_preview and digest != data["preview_digest"]:
                message = (
                    "what this would write differs from the preview you confirmed (the "
                    "calendar changed, or the input differs from the preview's): preview again"
                )
                raise PreviewOutdated(
                    message, errors=[{"field": "preview_digest", "message": message}]
                )
        presented, new_etag = self.present_target(request, kwargs)
        return Response({self.target_name: presented, "result": result}, headers={"ETag": new_etag})

    def _plain(self, result: Any) -> dict[str, Any]:
        return json.loads(json.dumps(self.ResultSerializer(result).data, cls=DjangoJSONEncoder))

    def load_target(self, request: Request, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def target_etag(self, target: Any) -> str:
        raise NotImplementedError

    def present_target(self, request: Request, kwargs: dict[str, Any]) -> tuple[Any, str]:
        raise NotImplementedError

    def preview(self, target: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def confirm(self, target: Any, data: dict[str, Any], *, by: Any) -> Any:
        raise NotImplementedError


class VisitOperation(PreviewConfirm):
    """A use case on one visit; its ETag is the visit's version, which the service checks
    again under the row lock."""

    target_name = "visit"

    def load_target(self, request: Request, kwargs: dict[str, Any]) -> ScheduledVisit:
        return _writable_visit(request, kwargs["pk"])

    def target_etag(self, target: ScheduledVisit) -> str:
        return visit_etag(target)

    def present_target(self, request: Request, kwargs: dict[str, Any]) -> tuple[Any, str]:
        visit = _readable_visit(request, kwargs["pk"])
        return _visit_data(request, visit), visit_etag(visit)

    def confirm(self, target: ScheduledVisit, data: dict[str, Any], *, by: Any) -> Any:
        return self.confirm_visit(target, data, by=by, expected_version=target.version)

    def confirm_visit(
        self, visit: ScheduledVisit, data: dict[str, Any], *, by: Any, expected_version: int
    ) -> Any:
        raise NotImplementedError


class ParticipantCalendarOperation(PreviewConfirm):
    """A use case on one participant's calendar (anchor, taper, protocol version): the
    participant is locked for it, and its ETag is checked under the lock."""

    target_name = "participant"

    def load_target(self, request: Request, kwargs: dict[str, Any]) -> Participant:
        return _writable_participant(request, kwargs["pk"])

    def target_etag(self, target: Participant) -> str:
        return participant_etag(target)

    def present_target(self, request: Request, kwargs: dict[str, Any]) -> tuple[Any, str]:
        participant = _readable_participant(request, kwargs["pk"])
        context = present_participants(request, [participant])
        return out.ParticipantOut(participant, context=context).data, participant_etag(participant)


class PreviewDigestField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_length=64,
            help_text="The preview_digest the preview returned: the confirm writes only what "
            "was previewed.",
            **kwargs,
        )


class BookingOut(serializers.Serializer[Any]):
    visit_code = serializers.CharField()
    booked_start = serializers.DateTimeField(help_text="The booked instant, in UTC.")
    booked_date = serializers.DateField(help_text="The site-local date booked.")
    deviation_days = serializers.IntegerField(help_text="Days outside the window; 0 inside.")
    calendar = out.CalendarDiffOut()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {
            "visit_code": instance.visit_code,
            "booked_start": instance.booked_start.isoformat().replace("+00:00", "Z"),
            "booked_date": instance.booked_date.isoformat(),
            "deviation_days": instance.deviation_days,
            "calendar": out.calendar_diff_data(instance.calendar),
        }


class DiffResult(out.CalendarDiffOut):
    def to_representation(self, instance: Any) -> dict[str, Any]:
        return out.calendar_diff_data(instance)


class VisitBook(VisitOperation):
    """Book (or move) a visit to a site-local date and time; outside the window it is a
    deviation and needs a reason, as does a reschedule."""

    has_preview = True
    ResultSerializer = BookingOut

    class InputSerializer(serializers.Serializer[Any]):
        local_date = out.BoundedDateField(help_text="The day, at the site.")
        local_time = serializers.TimeField(help_text="The wall time, in the site's zone.")
        reason = serializers.CharField(max_length=2000, required=False, default="")
        preview_digest = PreviewDigestField()

    def preview(self, visit: ScheduledVisit, data: dict[str, Any]) -> Any:
        return visit_book_preview(
            visit=visit, local_date=data["local_date"], local_time=data["local_time"]
        )

    def confirm_visit(
        self, visit: ScheduledVisit, data: dict[str, Any], *, by: Any, expected_version: int
    ) -> Any:
        return visit_book(
            visit=visit,
            local_date=data["local_date"],
            local_time=data["local_time"],
            reason=data["reason"],
            by=by,
            expected_version=expected_version,
        )


class VisitBookPreview(VisitBook):
    is_preview = True


class VisitRecordDone(VisitOperation):
    """Record a visit as done on its actual date; every procedure not listed as not done is
    recorded as done. Outside the window it is a deviation and needs a reason."""

    has_preview = True
    ResultSerializer = DiffResult

    class InputSerializer(serializers.Serializer[Any]):
        actual_date = out.BoundedDateField(help_text="The day it took place, at the site.")
        actual_time = serializers.TimeField(required=False, allow_null=True, default=None)
        procedures_not_done = serializers.DictField(
            child=serializers.CharField(max_length=2000),
            required=False,
            default=dict,
            help_text="Procedure code -> why it was not done.",
        )
        reason = serializers.CharField(max_length=2000, required=False, default="")
        preview_digest = PreviewDigestField()

    def preview_fields(self) -> set[str]:
        return {"actual_date"}

    def preview(self, visit: ScheduledVisit, data: dict[str, Any]) -> Any:
        return visit_record_done_preview(visit=visit, actual_date=data["actual_date"])

    def confirm_visit(
        self, visit: ScheduledVisit, data: dict[str, Any], *, by: Any, expected_version: int
    ) -> Any:
        return visit_record_done(
            visit=visit,
            actual_date=data["actual_date"],
            actual_time=data["actual_time"],
            procedures_not_done=data["procedures_not_done"],
            reason=data["reason"],
            by=by,
            expected_version=expected_version,
        )


class VisitRecordDonePreview(VisitRecordDone):
    is_preview = True


class ReasonInput(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=2000)


class VisitMarkMissed(VisitOperation):
    """Record that a visit did not take place; visits counted from it fall back to its target."""

    InputSerializer = ReasonInput
    ResultSerializer = DiffResult

    def confirm_visit(
        self, visit: ScheduledVisit, data: dict[str, Any], *, by: Any, expected_version: int
    ) -> Any:
        return visit_mark_missed(
            visit=visit, reason=data["reason"], by=by, expected_version=expected_version
        )


class VisitCancel(VisitOperation):
    """Cancel a visit (it will not take place); the participant's calendar drops it."""

    InputSerializer = ReasonInput
    ResultSerializer = DiffResult

    def confirm_visit(
        self, visit: ScheduledVisit, data: dict[str, Any], *, by: Any, expected_version: int
    ) -> Any:
        return visit_cancel(
            visit=visit, reason=data["reason"], by=by, expected_version=expected_version
        )


# ----------------------------------------------------------------------------------------
# A participant's calendar: unscheduled visits, anchors, taper decisions, protocol versions


class UnscheduledVisitAdd(APIView):
    """Add an unscheduled visit (a flare, say) with why it is needed and the procedures it
    carries; with a time it is booked at that site-local time. If-Match: the participant."""

    class InputSerializer(serializers.Serializer[Any]):
        local_date = out.BoundedDateField(help_text="The day, at the site.")
        local_time = serializers.TimeField(
            required=False, allow_null=True, default=None, help_text="Books it at this time."
        )
        reason = serializers.CharField(max_length=2000)
        procedures = serializers.ListField(
            child=serializers.CharField(max_length=40),
            required=False,
            default=list,
            max_length=50,
            help_text="Procedure codes of the participant's protocol version.",
        )

    def post(self, request: Request, pk: int) -> Response:
        return idempotent(request, lambda: self._add(request, pk))

    def _add(self, request: Request, pk: int) -> Response:
        participant = _writable_participant(request, pk)
        data = validated(self.InputSerializer, request.data)
        require_if_match(request, participant_etag(participant))
        visit = visit_add_unscheduled(
            participant=participant,
            local_date=data["local_date"],
            local_time=data["local_time"],
            reason=data["reason"],
            procedure_codes=data["procedures"],
            by=request.user,
        )
        visit = _readable_visit(request, visit.pk)
        return Response(
            _visit_data(request, visit),
            status=201,
            headers={"ETag": visit_etag(visit), "Location": f"/api/v1/visits/{visit.pk}/"},
        )


class AnchorChange(ParticipantCalendarOperation):
    """Set one of the participant's anchor dates (Day 1, consent, PSL start…) and re-plan
    what counts from it; history stays as it was. Dates outside the protocol's range for
    the anchor are refused (422)."""

    has_preview = True
    ResultSerializer = DiffResult

    class InputSerializer(serializers.Serializer[Any]):
        date = out.BoundedDateField(help_text="The anchor's new date.")
        reason = serializers.CharField(max_length=2000)
        preview_digest = PreviewDigestField()

    def preview_fields(self) -> set[str]:
        return {"date"}

    def preview(self, target: Participant, data: dict[str, Any]) -> Any:
        return participant_anchor_change_preview(
            participant=target, code=self.kwargs["code"], new_date=data["date"]
        )

    def confirm(self, target: Participant, data: dict[str, Any], *, by: Any) -> Any:
        return participant_anchor_change(
            participant=target,
            code=self.kwargs["code"],
            new_date=data["date"],
            by=by,
            reason=data["reason"],
        )


class AnchorChangePreview(AnchorChange):
    is_preview = True


class TaperDecision(ParticipantCalendarOperation):
    """Hold a taper at a week (no dose) or prescribe that week's dose; the service checks the
    dose against the protocol (tablet steps, the weight-based ceiling, no increase unless
    allow_increase) and re-plans the later steps."""

    has_preview = True
    ResultSerializer = DiffResult

    class InputSerializer(serializers.Serializer[Any]):
        milestone_code = serializers.CharField(max_length=40, help_text="The taper's code.")
        week = serializers.IntegerField(min_value=0, max_value=1000)
        dose_mg = serializers.DecimalField(
            max_digits=12,
            decimal_places=4,
            required=False,
            allow_null=True,
            default=None,
            help_text="mg/day prescribed from this week; null: hold last week's dose.",
        )
        allow_increase = serializers.BooleanField(
            required=False, default=False, help_text="The investigator confirms an increase."
        )
        reason = serializers.CharField(max_length=2000)
        preview_digest = PreviewDigestField()

    def preview(self, target: Participant, data: dict[str, Any]) -> Any:
        return taper_adjust_preview(
            participant=target,
            milestone_code=data["milestone_code"],
            week=data["week"],
            dose_mg=data["dose_mg"],
            allow_increase=data["allow_increase"],
        )

    def confirm(self, target: Participant, data: dict[str, Any], *, by: Any) -> Any:
        return taper_adjust(
            participant=target,
            milestone_code=data["milestone_code"],
            week=data["week"],
            dose_mg=data["dose_mg"],
            allow_increase=data["allow_increase"],
            by=by,
            reason=data["reason"],
        )


class TaperDecisionPreview(TaperDecision):
    is_preview = True


def _published_version(trial: Trial, label: str) -> ProtocolVersion:
    version = _published(trial).filter(label=label).first()
    if version is None:
        raise _field_error("version", f"no published version {label!r} of {trial.code}")
    return version


class VersionMove(ParticipantCalendarOperation):
    """Move a participant onto an amended (published) protocol version from a date: only
    open visits and planned milestones from that date are re-planned."""

    has_preview = True
    ResultSerializer = DiffResult

    class InputSerializer(serializers.Serializer[Any]):
        version = serializers.CharField(max_length=40, help_text="The version's label.")
        on = out.BoundedDateField(help_text="Re-plan from this day on.")
        reason = serializers.CharField(max_length=2000, help_text="The amendment's name.")
        preview_digest = PreviewDigestField()

    def preview(self, target: Participant, data: dict[str, Any]) -> Any:
        return participant_move_to_version_preview(
            participant=target,
            version=_published_version(target.trial, data["version"]),
            on=data["on"],
        )

    def confirm(self, target: Participant, data: dict[str, Any], *, by: Any) -> Any:
        return participant_move_to_version(
            participant=target,
            version=_published_version(target.trial, data["version"]),
            on=data["on"],
            by=by,
            reason=data["reason"],
        )


class VersionMovePreview(VersionMove):
    is_preview = True


# ----------------------------------------------------------------------------------------
# Protocol amendments at a site


def trial_site_etag(trial_site: TrialSite) -> str:
    state = f"{trial_site.pk}|{trial_site.protocol_version_id}|{trial_site.approved_on}"
    return f'"trial-site-{trial_site.pk}-{hashlib.sha256(state.encode()).hexdigest()[:20]}"'


class ApprovalOut(serializers.Serializer[Any]):
    trial = serializers.CharField()
    site = serializers.CharField()
    protocol_version = serializers.CharField(
        allow_null=True, help_text="The approved version's label; null: the newest published."
    )
    approved_on = serializers.DateField(allow_null=True)
    etag = serializers.CharField()


def _approval_data(trial_site: TrialSite) -> dict[str, Any]:
    version = trial_site.protocol_version
    return dict(
        ApprovalOut(
            {
                "trial": trial_site.trial.code,
                "site": trial_site.site.code,
                "protocol_version": version.label if version else None,
                "approved_on": trial_site.approved_on,
                "etag": trial_site_etag(trial_site),
            }
        ).data
    )


class MovedOut(serializers.Serializer[Any]):
    study_id = serializers.CharField()
    calendar = out.CalendarDiffOut()


class ApprovalStateOut(serializers.Serializer[Any]):
    protocol_version = serializers.CharField(
        allow_null=True, help_text="The approved version's label; null: the newest published."
    )
    approved_on = serializers.DateField(allow_null=True)


class SiteApprovalResult(serializers.Serializer[Any]):
    before = ApprovalStateOut(help_text="The site's approval as it is now.")
    after = ApprovalStateOut(help_text="The site's approval once this is confirmed.")
    moved = MovedOut(
        many=True,
        help_text="Each participant moved onto the version (screening or enrolled, on "
        "another version), by study id, with what changes in their calendar.",
    )


class SiteApproval(PreviewConfirm):
    """A site's approval of a protocol version (GET: the current one). POST …/preview/ says
    what approving would change: the approval, and each of the site's active participants of
    the trial who would be moved onto the version from `on`, with their calendar changes. The
    confirm (POST …/approval/) records it and moves them, and carries the preview's digest:
    if anything changed in between (a visit booked, a participant enrolled), 409 and nothing
    is written. Never before the approval date; roles that change calendars at the site only.
    """

    target_name = "approval"
    has_preview = True
    ResultSerializer = SiteApprovalResult

    class InputSerializer(serializers.Serializer[Any]):
        version = serializers.CharField(max_length=40, help_text="The version's label.")
        approved_on = out.BoundedDateField(help_text="The day the site's ethics approval ran.")
        on = out.BoundedDateField(help_text="Move participants from this day on.")
        reason = serializers.CharField(max_length=2000, help_text="The amendment's name.")
        preview_digest = PreviewDigestField()

    def _trial_site(self, request: Request, code: str, site_code: str) -> TrialSite:
        trial = _trial(request, code)
        site = access.sites_for(request.user).filter(code=site_code).first()
        trial_site = (
            TrialSite.objects.select_related("trial", "site", "protocol_version")
            .filter(trial=trial, site=site)
            .first()
        )
        if (
            site is None
            or trial_site is None
            or not access.can_read_at(request.user, trial=trial, site=site)
        ):
            raise exceptions.NotFound("no such site of this trial")
        return trial_site

    @extend_schema(responses=ApprovalOut)
    def get(self, request: Request, code: str, site: str) -> Response:
        trial_site = self._trial_site(request, code, site)
        return Response(_approval_data(trial_site), headers={"ETag": trial_site_etag(trial_site)})

    def load_target(self, request: Request, kwargs: dict[str, Any]) -> TrialSite:
        trial_site = self._trial_site(request, kwargs["code"], kwargs["site"])
        if not access.can_write_at(request.user, trial=trial_site.trial, site=trial_site.site):
            raise exceptions.PermissionDenied("your role may not record approvals at this site")
        # Locked, as the service locks it: a preview and its confirm see one approval. Only
        # this row ("self"): Postgres locks no nullable side of an outer join.
        return (
            TrialSite.objects.select_for_update(of=("self",))
            .select_related("trial", "site", "protocol_version")
            .get(pk=trial_site.pk)
        )

    def target_etag(self, target: TrialSite) -> str:
        return trial_site_etag(target)

    def present_target(self, request: Request, kwargs: dict[str, Any]) -> tuple[Any, str]:
        trial_site = self._trial_site(request, kwargs["code"], kwargs["site"])
        return _approval_data(trial_site), trial_site_etag(trial_site)

    def _states(self, target: TrialSite, version: ProtocolVersion, data: dict[str, Any]) -> Any:
        before = target.protocol_version
        return (
            {
                "protocol_version": before.label if before else None,
                "approved_on": target.approved_on,
            },
            {"protocol_version": version.label, "approved_on": data["approved_on"]},
        )

    def preview(self, target: TrialSite, data: dict[str, Any]) -> Any:
        version = _published_version(target.trial, data["version"])
        # The service's own preview: the same rules (not before the approval date) and the
        # same participants (active ones on another version) as the confirm.
        diffs = site_move_to_version_preview(
            site=target.site, version=version, approved_on=data["approved_on"], on=data["on"]
        )
        before, after = self._states(target, version, data)
        moved = [
            {"study_id": study_id, "calendar": out.calendar_diff_data(diff)}
            for study_id, diff in diffs.items()
        ]
        return {"before": before, "after": after, "moved": moved}

    def confirm(self, target: TrialSite, data: dict[str, Any], *, by: Any) -> Any:
        version = _published_version(target.trial, data["version"])
        before, after = self._states(target, version, data)
        moved = site_move_to_version(
            site=target.site,
            version=version,
            approved_on=data["approved_on"],
            on=data["on"],
            by=by,
            reason=data["reason"],
        )
        return {
            "before": before,
            "after": after,
            "moved": [
                {"study_id": study_id, "calendar": out.calendar_diff_data(diff)}
                for study_id, diff in moved.items()
            ],
        }


class SiteApprovalPreview(SiteApproval):
    is_preview = True
    http_method_names = ["post", "options"]


# ----------------------------------------------------------------------------------------
# Reminders (the outbox rows of a participant's calendar)


def reminder_etag(reminder: Reminder) -> str:
    state = f"{reminder.pk}|{reminder.status}|{reminder.attempts}|{reminder.next_attempt_at}"
    return f'"reminder-{reminder.pk}-{hashlib.sha256(state.encode()).hexdigest()[:20]}"'


class ReminderOut(serializers.ModelSerializer[Reminder]):
    participant = serializers.IntegerField(source="participant_id")
    visit = serializers.IntegerField(source="visit_id", allow_null=True)
    milestone = serializers.IntegerField(source="milestone_id", allow_null=True)
    last_error = serializers.SerializerMethodField(
        help_text="Why the last attempt failed: only for the site's coordinators and "
        "investigators (it may name an address); null for other roles."
    )
    etag = serializers.SerializerMethodField()

    class Meta:
        model = Reminder
        fields = [
            "id",
            "participant",
            "visit",
            "milestone",
            "rule_code",
            "event",
            "channel",
            "audience",
            "due_at",
            "status",
            "attempts",
            "next_attempt_at",
            "sent_at",
            "last_error",
            "etag",
        ]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_last_error(self, reminder: Reminder) -> str | None:
        if not self.context["show_contact"](reminder.participant):
            return None
        return reminder.last_error

    def get_etag(self, reminder: Reminder) -> str:
        return reminder_etag(reminder)


def _reminder_context(request: Request) -> dict[str, Any]:
    user = request.user
    return {
        "request": request,
        "show_contact": lambda p: access.can_see_contact_details(
            user, trial_id=p.trial_id, site_id=p.site_id
        ),
    }


class _ReminderList(generics.ListAPIView[Reminder]):
    serializer_class = ReminderOut
    ordering = ("id",)

    def get_serializer_context(self) -> dict[str, Any]:
        return _reminder_context(self.request)

    def reminders(self) -> QuerySet[Reminder]:
        return access.reminders_for(self.request.user).select_related("participant")


class ParticipantReminderList(_ReminderList):
    """The participant's reminders and invites: what is due, sent, failed or dead."""

    def get_queryset(self) -> QuerySet[Reminder]:
        participant = _readable_participant(self.request, self.kwargs["pk"])
        return self.reminders().filter(participant=participant)


class VisitReminderList(_ReminderList):
    """The reminders and invites of one visit."""

    def get_queryset(self) -> QuerySet[Reminder]:
        visit = _readable_visit(self.request, self.kwargs["pk"])
        return self.reminders().filter(visit=visit)


def _readable_reminder(request: Request, pk: int) -> Reminder:
    reminder = access.reminders_for(request.user).select_related("participant").filter(pk=pk)
    found = reminder.first()
    if found is None:
        raise exceptions.NotFound("no such reminder")
    return found


class ReminderDetail(generics.GenericAPIView[Reminder]):
    serializer_class = ReminderOut

    def get(self, request: Request, pk: int) -> Response:
        reminder = _readable_reminder(request, pk)
        data = ReminderOut(reminder, context=_reminder_context(request)).data
        return Response(data, headers={"ETag": reminder_etag(reminder)})


class ReminderRetry(APIView):
    """Send a failed or dead reminder again now (attempts start over)."""

    @extend_schema(
        request=None,
        responses=ReminderOut,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
        summary="Retry a failed or dead reminder",
    )
    def post(self, request: Request, pk: int) -> Response:
        return idempotent(request, lambda: self._retry(request, pk))

    def _retry(self, request: Request, pk: int) -> Response:
        reminder = (
            access.reminders_for(request.user, write=True).select_for_update().filter(pk=pk).first()
        )
        if reminder is None:
            _readable_reminder(request, pk)
            raise exceptions.PermissionDenied("your role may read this reminder but not retry it")
        require_if_match(request, reminder_etag(reminder))
        if not reminders_retry(
            reminders=[reminder], by=request.user, reason="retried through the API"
        ):
            message = f"only failed or dead reminders are retried; this one is {reminder.status}"
            raise Refused(message, errors=[{"field": None, "message": message}])
        reminder = _readable_reminder(request, pk)
        data = ReminderOut(reminder, context=_reminder_context(request)).data
        return Response(data, headers={"ETag": reminder_etag(reminder)})


# ----------------------------------------------------------------------------------------
# Calendar feeds (capability URLs: the token is shown once, only its hash is kept)


def feed_etag(feed: CalendarFeed) -> str:
    return f'"feed-{feed.pk}-{"revoked" if feed.revoked_at else "active"}"'


class FeedOut(serializers.ModelSerializer[CalendarFeed]):
    participant = serializers.IntegerField(source="participant_id", allow_null=True)
    site = serializers.SerializerMethodField()
    etag = serializers.SerializerMethodField()

    class Meta:
        model = CalendarFeed
        fields = ["id", "participant", "site", "created_at", "revoked_at", "etag"]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_site(self, feed: CalendarFeed) -> str | None:
        return feed.site.code if feed.site_id and feed.site else None

    def get_etag(self, feed: CalendarFeed) -> str:
        return feed_etag(feed)


class FeedIssuedOut(FeedOut):
    url = serializers.CharField(
        allow_null=True,
        help_text="The feed's URL, shown once: only its hash is kept. A replay of the same "
        "Idempotency-Key answers null here; revoke and issue a new feed if it was lost.",
    )

    class Meta(FeedOut.Meta):
        fields = [*FeedOut.Meta.fields, "url"]


class ParticipantFeeds(generics.ListAPIView[CalendarFeed]):
    """The participant's calendar feeds (GET); issue a new one (POST: a write role)."""

    serializer_class = FeedOut
    ordering = ("id",)

    def get_queryset(self) -> QuerySet[CalendarFeed]:
        participant = _readable_participant(self.request, self.kwargs["pk"])
        return (
            access.participant_feeds_for(self.request.user)
            .filter(participant=participant)
            .select_related("site")
        )

    @extend_schema(
        request=None,
        responses={201: FeedIssuedOut},
        parameters=[IDEMPOTENCY_PARAM],
        summary="Issue a calendar feed for the participant (its URL is shown once)",
    )
    def post(self, request: Request, pk: int) -> Response:
        return idempotent(
            request,
            lambda: self._issue(request, pk),
            stored=lambda body: {**body, "url": None},
        )

    def _issue(self, request: Request, pk: int) -> Response:
        participant = _writable_participant(request, pk)
        feed, token = feed_create(participant=participant, by=request.user)
        body = {**FeedOut(feed).data, "url": feed_public_url(feed=feed, token=token)}
        return Response(
            body,
            status=201,
            headers={"ETag": feed_etag(feed), "Cache-Control": "no-store"},
        )


def _readable_site(request: Request, code: str) -> Site:
    site = access.sites_for(request.user).filter(code=code).first()
    if site is None:
        raise exceptions.NotFound("no such site")
    return site


class SiteFeeds(generics.ListAPIView[CalendarFeed]):
    """The site's own calendar feeds (every visit at the site, for its shared calendar):
    listed (GET); issue a new one (POST: a role that changes calendars at the site)."""

    serializer_class = FeedOut
    ordering = ("id",)

    def get_queryset(self) -> QuerySet[CalendarFeed]:
        site = _readable_site(self.request, self.kwargs["code"])
        return access.site_feeds_for(self.request.user).filter(site=site).select_related("site")

    @extend_schema(
        request=None,
        responses={201: FeedIssuedOut},
        parameters=[IDEMPOTENCY_PARAM],
        summary="Issue a calendar feed for the site (its URL is shown once)",
    )
    def post(self, request: Request, code: str) -> Response:
        return idempotent(
            request,
            lambda: self._issue(request, code),
            stored=lambda body: {**body, "url": None},
        )

    def _issue(self, request: Request, code: str) -> Response:
        site = _readable_site(request, code)
        # The same rule as site_feeds_for(write=True): a role that changes calendars here.
        if not access.sites_for(request.user, roles=access.WRITE_ROLES).filter(pk=site.pk).exists():
            raise exceptions.PermissionDenied("your role may read this site but not issue feeds")
        trials = list(access.feed_trials_at(request.user, site))
        if not trials:  # a write role here, but for no trial of this site
            raise exceptions.PermissionDenied("you change no trial's calendars at this site")
        feed, token = feed_create(site=site, trials=trials, by=request.user)
        body = {**FeedOut(feed).data, "url": feed_public_url(feed=feed, token=token)}
        return Response(
            body,
            status=201,
            headers={"ETag": feed_etag(feed), "Cache-Control": "no-store"},
        )


def _feeds(user: Any, *, write: bool = False) -> QuerySet[CalendarFeed]:
    return access.participant_feeds_for(user, write=write) | access.site_feeds_for(
        user, write=write
    )


class FeedRevoke(APIView):
    """Revoke a feed: its URL answers 404 from now on."""

    @extend_schema(
        request=None,
        responses=FeedOut,
        parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
        summary="Revoke a calendar feed",
    )
    def post(self, request: Request, pk: int) -> Response:
        return idempotent(request, lambda: self._revoke(request, pk))

    def _revoke(self, request: Request, pk: int) -> Response:
        feed = _feeds(request.user, write=True).filter(pk=pk).first()
        if feed is None:
            if not _feeds(request.user).filter(pk=pk).exists():
                raise exceptions.NotFound("no such feed")
            raise exceptions.PermissionDenied("your role may not revoke this feed")
        require_if_match(request, feed_etag(feed))
        feed = feed_revoke(feed=feed, by=request.user)
        return Response(FeedOut(feed).data, headers={"ETag": feed_etag(feed)})


def _operation_schemas() -> None:
    # The nested InputSerializers all share one class name; the schema's components need
    # one name each.
    named: list[type[APIView]] = [
        ParticipantEnroll,
        ParticipantWithdraw,
        ParticipantComplete,
        UnscheduledVisitAdd,
        VisitBook,
        VisitRecordDone,
        AnchorChange,
        TaperDecision,
        VersionMove,
        SiteApproval,
    ]
    for named_view in named:
        named_view.InputSerializer.__name__ = f"{named_view.__name__}Input"  # type: ignore[attr-defined]
    extend_schema_view(
        post=extend_schema(
            request=UnscheduledVisitAdd.InputSerializer,
            responses={201: out.VisitOut},
            parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
            summary="Add an unscheduled visit",
        )
    )(UnscheduledVisitAdd)
    view: type[PreviewConfirm]
    for view, summary in (
        (VisitBook, "Book or reschedule a visit (confirm)"),
        (VisitRecordDone, "Record a visit as done (confirm)"),
        (VisitMarkMissed, "Mark a visit missed"),
        (VisitCancel, "Cancel a visit"),
        (AnchorChange, "Change an anchor date (confirm)"),
        (TaperDecision, "Record a taper decision (confirm)"),
        (VersionMove, "Move a participant onto a protocol version (confirm)"),
        (
            SiteApproval,
            "Record a site's approval of a protocol version and move its participants (confirm)",
        ),
    ):
        extend_schema_view(
            post=extend_schema(
                request=view.InputSerializer,
                responses=inline_confirm_out(view),
                parameters=[IF_MATCH_PARAM, IDEMPOTENCY_PARAM],
                summary=summary,
            )
        )(view)
    for view, summary in (
        (VisitBookPreview, "Preview booking a visit"),
        (VisitRecordDonePreview, "Preview recording a visit as done"),
        (AnchorChangePreview, "Preview changing an anchor date"),
        (TaperDecisionPreview, "Preview a taper decision"),
        (VersionMovePreview, "Preview moving a participant onto a protocol version"),
        (SiteApprovalPreview, "Preview a site's approval of a protocol version"),
    ):
        extend_schema_view(
            post=extend_schema(
                request=preview_input(view),
                responses=inline_preview_out(view),
                parameters=[IF_MATCH_OPTIONAL_PARAM, NO_IDEMPOTENCY_PARAM],
                summary=summary,
            )
        )(view)


_preview_inputs: dict[type[PreviewConfirm], type[serializers.Serializer[Any]]] = {}


def preview_input(view: type[PreviewConfirm]) -> type[serializers.Serializer[Any]]:
    """The preview's input serializer: the confirm's fields the preview depends on."""
    if view not in _preview_inputs:
        keep = view().preview_fields()
        fields = {
            name: copy.deepcopy(field)
            for name, field in view.InputSerializer._declared_fields.items()
            if name in keep
        }
        name = view.__name__.removesuffix("Preview") + "PreviewInput"
        _preview_inputs[view] = type(name, (serializers.Serializer,), fields)
    return _preview_inputs[view]


def _target_out(view: type[PreviewConfirm]) -> serializers.Serializer[Any]:
    if view.target_name == "approval":
        return ApprovalOut()
    return out.VisitOut() if view.target_name == "visit" else out.ParticipantOut()


def inline_confirm_out(view: type[PreviewConfirm]) -> type[serializers.Serializer[Any]]:
    return type(
        f"{view.__name__}Out",
        (serializers.Serializer,),
        {view.target_name: _target_out(view), "result": view.ResultSerializer()},
    )


def inline_preview_out(view: type[PreviewConfirm]) -> type[serializers.Serializer[Any]]:
    return type(
        f"{view.__name__}Out",
        (serializers.Serializer,),
        {
            f"{view.target_name}_etag": serializers.CharField(),
            "preview_digest": serializers.CharField(),
            "result": view.ResultSerializer(),
        },
    )


_operation_schemas()


class NotFoundView(APIView):
    """Every other path under /api/v1/: a problem 404, never an HTML page."""

    permission_classes = []  # type: ignore[var-annotated]
    authentication_classes = []  # type: ignore[var-annotated]
    throttle_classes = []  # type: ignore[var-annotated]
    schema = None

    def dispatch_any(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound("no such endpoint (paths end with a slash)")

    get = post = put = patch = delete = head = options = dispatch_any
