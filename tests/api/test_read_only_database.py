"""A connection whose server takes no writes (a managed database's failover: the old primary
is a standby now, and a connection made before the switch still reaches it): every face
answers 503 with Retry-After, and the connection is let go when the request ends, so the
next request connects anew instead of failing for the rest of the connection's age.

Real Postgres: the test's connection is made read-only the way a standby is, for the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import django.db as django_db
import pytest
from django.db import close_old_connections, connection

from scheduler import unavailable
from scheduler.models import ScheduledVisit
from tests.api.conftest import World


@pytest.fixture
def persistent_connection() -> Iterator[None]:
    """Connections kept between requests, as deployed (CONN_MAX_AGE; the tests' default closes
    each request's connection, which would hide what this is about)."""
    kept = connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = None  # for ever
    try:
        yield
    finally:
        connection.close()  # and with it any read-only session setting
        connection.settings_dict["CONN_MAX_AGE"] = kept


def _read_only() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION default_transaction_read_only = on")


def _request_ends() -> None:
    """What Django does when a request ends (the test client leaves it out: it would close
    the test's own connection)."""
    close_old_connections()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_read_only_server_answers_503_and_the_next_request_connects_anew(
    world: World, persistent_connection: None
) -> None:
    system = world.client("site_system")
    system.raise_request_exception = False
    participant = world.people["BERLIN-001"]
    calendar = f"/api/v1/participants/{participant.pk}/calendar/"
    person = world.signed_in("coordinator")
    page = f"/admin/participants/participant/{participant.pk}/change/"

    _read_only()
    refused = system.get(calendar)  # a read, which writes who read it (the audit trail)
    kept_for_now = connection.connection is not None
    _request_ends()
    let_go = connection.connection is None
    served = system.get(calendar)

    _read_only()
    refused_page = person.get(page)
    _request_ends()
    served_page = person.get(page)

    assert (refused.status_code, refused["Retry-After"]) == (503, "30")
    assert refused.json()["type"] == "/api/v1/problems/unavailable"
    assert (kept_for_now, let_go) == (True, True)
    assert served.status_code == 200
    assert (
        len(served.json()["visits"])
        == ScheduledVisit.objects.filter(participant=participant).count()
    )
    assert (refused_page.status_code, refused_page["Retry-After"]) == (503, "30")
    assert f"<p>{unavailable.PAGE_TEXT}</p>" in refused_page.content.decode()
    assert served_page.status_code == 200


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_only_a_read_only_server_is_let_go(persistent_connection: None) -> None:
    with pytest.raises(django_db.ProgrammingError) as missing, connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    _read_only()
    with pytest.raises(django_db.InternalError) as read_only, connection.cursor() as cursor:
        cursor.execute("INSERT INTO scheduler_workerheartbeat (name, beat_at) VALUES ('x', now())")

    unavailable.let_go_of_a_read_only_server(missing.value)
    _request_ends()
    assert connection.connection is not None  # kept: its server answers, and takes writes
    assert unavailable.database_away(missing.value) is False
    assert read_only.value.__cause__.diag.sqlstate == "25006"  # type: ignore[union-attr]
    assert unavailable.database_away(read_only.value) is True
    _request_ends()
    assert connection.connection is not None  # Django keeps it: the server still answers
    unavailable.let_go_of_a_read_only_server(read_only.value)
    _request_ends()
    assert connection.connection is None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_task_that_met_a_read_only_server_connects_anew(
    persistent_connection: None,
) -> None:
    """What Celery sends around a task that raised (task_failure, then task_postrun): the
    worker's connection to the read-only server is closed, so the next task finds the new
    primary; a task that failed otherwise keeps it."""
    from celery.signals import task_failure, task_postrun

    from config.celery import app

    task = app.tasks["scheduler.reminders_sweep"]

    def task_ends_with(error: BaseException) -> None:
        task_failure.send(sender=task, task_id="t", exception=error, args=(), kwargs={})
        task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={})

    with pytest.raises(django_db.ProgrammingError) as missing, connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    task_ends_with(missing.value)
    kept = connection.connection is not None
    _read_only()
    with pytest.raises(django_db.InternalError) as read_only, connection.cursor() as cursor:
        cursor.execute("INSERT INTO scheduler_workerheartbeat (name, beat_at) VALUES ('x', now())")
    task_ends_with(read_only.value)

    assert (kept, connection.connection) == (True, None)
