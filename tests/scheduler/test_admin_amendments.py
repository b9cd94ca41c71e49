"""Amendments in the admin: a trial's data manager publishes a draft; a site's coordinator
records the site's approval and moves its participants, after a preview of every
participant's calendar. Each through the one preview → confirm view, scoped by role."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.urls import reverse

from participants.models import Participant
from scheduler.models import ScheduledVisit
from tests.conftest import seed_path, sign_in
from tests.factories import SiteFactory, member
from tests.scheduler.test_amendments_and_audit import enrolled, tsukuba_amendment
from trials.models import ProtocolVersion, TrialSite
from trials.services import protocol_import

D = dt.date
NOW = dt.datetime(2026, 3, 25, 3, 0, tzinfo=dt.UTC)  # 12:00 in Tsukuba

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def tsukuba(import_seed):
    v10 = import_seed("001")
    site = SiteFactory.create(code="tsukuba", name="Tsukuba", timezone="Asia/Tokyo")
    other = SiteFactory.create(code="kyoto", name="Kyoto", timezone="Asia/Tokyo")
    first = enrolled(v10, site, "T-001")
    second = enrolled(v10, site, "T-002")
    elsewhere = enrolled(v10, other, "K-001")
    return (
        v10,
        TrialSite.objects.get(site=site),
        TrialSite.objects.get(site=other),
        (
            first,
            second,
            elsewhere,
        ),
    )


def url(obj, name: str) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=[obj.pk])


def user(django_user_model, name: str, *, trial, site=None, role: str):
    person = django_user_model.objects.create_user(name, is_staff=True)
    return member(person, trial=trial, site=site, role=role)


def test_a_site_approval_previews_each_participant_then_moves_them(
    client, django_user_model, tsukuba
) -> None:
    v10, here, there, (first, second, elsewhere) = tsukuba
    v11 = tsukuba_amendment()
    sign_in(
        client, user(django_user_model, "c", trial=v10.trial, site=here.site, role="coordinator")
    )
    wanted = {
        "version_id": str(v11.pk),
        "approved_on": "2026-03-24",
        "on": "2026-04-01",
        "reason": "amendment 1",
    }

    page = client.get(url(here, "change"))
    preview = client.post(url(here, "approve"), wanted)
    untouched = list(Participant.objects.values_list("protocol_version__label", flat=True))
    done = client.post(url(here, "approve"), {**wanted, "_confirm": "1"})

    assert [label for label, _ in page.context["lifecycle_actions"]] == [
        "Record approval and move participants"
    ]
    assert [study_id for study_id, _ in preview.context["moved_participants"]] == [
        "T-001",
        "T-002",
    ]
    assert [
        sorted((c.visit_code, c.kind) for c in diff.visits if c.kind == "added")
        for _, diff in preview.context["moved_participants"]
    ] == [[("W28", "added")], [("W28", "added")]]
    assert [(label, value) for label, value, _ in preview.context["outcome"]][2:4] == [
        ("Will approve", f"{v11}, approved on 2026-03-24"),
        ("Participants moved", "2, from 2026-04-01"),
    ]
    assert untouched == ["1.0", "1.0", "1.0"]
    assert (done.status_code, done["Location"]) == (302, url(here, "change"))
    here.refresh_from_db()
    assert (here.protocol_version, here.approved_on) == (v11, D(2026, 3, 24))
    assert dict(Participant.objects.values_list("study_id", "protocol_version__label")) == {
        "T-001": "1.1",
        "T-002": "1.1",
        "K-001": "1.0",
    }
    assert ScheduledVisit.objects.filter(visit_definition__code="W28").count() == 2


def test_a_move_before_the_approval_is_refused_at_the_preview(
    client, django_user_model, tsukuba
) -> None:
    v10, here, _, _ = tsukuba
    v11 = tsukuba_amendment()
    sign_in(
        client, user(django_user_model, "c", trial=v10.trial, site=here.site, role="coordinator")
    )

    response = client.post(
        url(here, "approve"),
        {
            "version_id": str(v11.pk),
            "approved_on": "2026-04-02",
            "on": "2026-04-01",
            "reason": "a1",
        },
    )

    assert list(response.context["form"].non_field_errors()) == [
        f"{here.site} approved {v11} on 2026-04-02; participants cannot be moved onto it on "
        "2026-04-01, before that date"
    ]
    here.refresh_from_db()
    assert here.protocol_version is None


def test_who_may_approve_and_who_may_publish(client, django_user_model, tsukuba) -> None:
    v10, here, there, _ = tsukuba
    text = seed_path("001").read_text(encoding="utf-8")
    draft = protocol_import(
        text=text.replace('label: "1.0"\n  status: published', 'label: "1.2"\n  status: draft'),
        source="draft.yaml",
    )
    coordinator = user(django_user_model, "c", trial=v10.trial, site=here.site, role="coordinator")
    manager = user(django_user_model, "dm", trial=v10.trial, role="data_manager")

    sign_in(client, coordinator)
    other_site = client.get(url(there, "approve")).status_code
    coordinator_publishes = client.get(url(draft, "publish")).status_code
    sign_in(client, manager)
    manager_approves = client.get(url(here, "approve")).status_code
    preview = client.post(url(draft, "publish"), {"reason": ""})
    still_draft = ProtocolVersion.objects.get(pk=draft.pk).is_published
    done = client.post(url(draft, "publish"), {"reason": "", "_confirm": "1"})

    assert (other_site, coordinator_publishes, manager_approves) == (404, 403, 403)
    assert [(label, value) for label, value, _ in preview.context["outcome"]] == [
        ("Version", str(draft)),
        ("Sites that may then approve it", "Tsukuba, Kyoto"),
    ]
    assert (still_draft, done.status_code) == (False, 302)
    assert ProtocolVersion.objects.get(pk=draft.pk).is_published is True
    assert client.get(url(draft, "change")).context.get("lifecycle_actions") is None
