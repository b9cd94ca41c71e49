"""The participant's page asks once whether the user may change the participant."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from participants.models import Participant
from scheduler.admin.scoping import ScopedAdmin
from tests.workspace.conftest import World, staff

SCOPE_CHECK = 'SELECT 1 AS "a" FROM "participants_participant"'


def scope_checks(queries: CaptureQueriesContext) -> int:
    return sum(query["sql"].startswith(SCOPE_CHECK) for query in queries.captured_queries)


def test_the_page_checks_the_scope_of_its_participant_once(
    client: Any, world: World, coordinator: Any, now: None
) -> None:
    client.force_login(coordinator)
    url = reverse("admin:participants_participant_change", args=[world.p1.pk])
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url)
    assert page.status_code == 200
    # Django's change view asked seven times (form, inlines, buttons): now one query.
    assert scope_checks(queries) == 1
    # The answer is still the coordinator's: the page offers the actions of a writer.
    assert page.context["has_change_permission"] is True


def test_a_monitor_reading_the_page_is_still_refused_changes(
    client: Any, world: World, now: None
) -> None:
    monitor = staff("monitor", trial=world.niams.trial, site=None, role="sponsor_monitor")
    client.force_login(monitor)
    url = reverse("admin:participants_participant_change", args=[world.p1.pk])
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url)
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    # A monitor writes nowhere: the empty scope is known without asking the database.
    assert scope_checks(queries) == 0


def test_a_read_keeps_its_answer_a_write_asks_again(
    world: World, coordinator: Any, now: None
) -> None:
    """Within a GET the row cannot leave the scope; within a POST it can (the request's own
    change may move it), so a POST asks the database each time."""
    model_admin = admin.site._registry[Participant]
    assert isinstance(model_admin, ScopedAdmin)
    factory = RequestFactory()
    read, write = factory.get("/"), factory.post("/")
    for request in (read, write):
        request.user = coordinator
        assert model_admin.may_write(request, world.p1) is True
    # The participant leaves the coordinator's site (New York) between two questions.
    Participant.objects.filter(pk=world.p1.pk).update(site=world.tokyo)
    assert model_admin.may_write(read, world.p1) is True  # the same request: its first answer
    assert model_admin.may_write(write, world.p1) is False
    fresh = factory.get("/")
    fresh.user = coordinator
    assert model_admin.may_write(fresh, world.p1) is False  # a new request asks again
