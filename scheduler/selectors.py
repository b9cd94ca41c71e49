from __future__ import annotations

from scheduler.engine import ProtocolSnapshot, snapshot_from_document
from trials.models import ProtocolVersion
from trials.services import protocol_document


def protocol_snapshot(*, version: ProtocolVersion) -> ProtocolSnapshot:
    """The engine's view of a stored protocol version (a fixed number of queries)."""
    return snapshot_from_document(protocol_document(version=version))
