"""ETags on every object and If-Match on every change (lost updates become 412s).

A visit's ETag is its `version`, which every service that changes it raises, and the
services check it again under the row lock, so a change between our check and theirs is
still refused. Objects without a version field get a digest of their state instead.
"""

from __future__ import annotations

import hashlib

from rest_framework.request import Request

from participants.models import Participant
from scheduler.api.errors import PreconditionFailed, PreconditionRequired
from scheduler.models import ScheduledVisit

IF_MATCH = "If-Match"


def visit_etag(visit: ScheduledVisit) -> str:
    return f'"visit-{visit.pk}-v{visit.version}"'


def participant_etag(participant: Participant) -> str:
    state = "|".join(
        str(value)
        for value in (
            participant.pk,
            participant.status,
            participant.protocol_version_id,
            participant.study_id,
            participant.site_id,
            participant.birth_date,
            participant.weight_kg,
            participant.enrolled_at,
            participant.ended_on,
            participant.timezone,
            # Anchors are shown with the participant and moved by its anchor operations.
            sorted((a.code, a.date.isoformat()) for a in participant.anchors.all()),
        )
    )
    return f'"participant-{participant.pk}-{hashlib.sha256(state.encode()).hexdigest()[:20]}"'


def require_if_match(request: Request, current_etag: str) -> None:
    """Refuse a change made without If-Match (428) or from a stale copy (412)."""
    header = request.headers.get(IF_MATCH, "").strip()
    if not header or header == "*":
        message = "send If-Match with the ETag of the copy you are changing (not *)"
        raise PreconditionRequired(message, errors=[{"field": IF_MATCH, "message": message}])
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    if current_etag not in tags:
        message = (
            f"the object changed since you read it: its ETag is now {current_etag}; "
            "read it again and retry"
        )
        raise PreconditionFailed(message, errors=[{"field": IF_MATCH, "message": message}])
