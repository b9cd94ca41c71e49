"""The site calendar admins: a member of a site's trial reads that site's calendar only; only
holders of `trials.change_site` change it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.booking.conftest import niams_calendar
from tests.conftest import sign_in
from tests.factories import SiteFactory, member
from trials.models import SiteClosure, SiteResource, TrialSite

pytestmark = pytest.mark.django_db
RESOURCES = reverse("admin:trials_siteresource_changelist")


@pytest.fixture
def sites(import_seed, niams_site):
    trial = import_seed("000").trial
    TrialSite.objects.create(trial=trial, site=niams_site)
    other = niams_calendar(SiteFactory.create(code="elsewhere", name="Elsewhere"))
    for site in (niams_site, other):
        SiteResource.objects.filter(site=site, name="PET/CT 1").update(name=f"PET/CT {site.code}")
    return trial, niams_site, other


def staff(django_user_model, name: str):
    return django_user_model.objects.create_user(name, password="pw", is_staff=True)


def test_a_member_reads_only_their_sites_calendar(client, django_user_model, sites) -> None:
    trial, site, other = sites
    coordinator = member(staff(django_user_model, "coord"), trial=trial, site=site)
    sign_in(client, coordinator)
    page = client.get(RESOURCES)
    assert page.status_code == 200
    assert "PET/CT nih-cc" in page.text and "PET/CT elsewhere" not in page.text
    elsewhere = SiteResource.objects.get(name="PET/CT elsewhere")
    url = reverse("admin:trials_siteresource_change", args=[elsewhere.pk])
    assert client.get(url).status_code == 404
    add = client.post(
        reverse("admin:trials_siteclosure_add"),
        {"site": site.pk, "date": "2026-03-02", "reason": "move"},
    )
    assert add.status_code == 403
    assert not SiteClosure.objects.exists()


def test_a_holder_of_change_site_edits_any_calendar(client, django_user_model, sites) -> None:
    _trial, site, _other = sites
    governor = staff(django_user_model, "governor")
    governor.user_permissions.add(
        Permission.objects.get(codename="change_site", content_type__app_label="trials")
    )
    sign_in(client, governor)
    added = client.post(
        reverse("admin:trials_siteclosure_add"),
        {"site": site.pk, "date": "2026-03-02", "reason": "building move"},
    )
    assert added.status_code == 302
    assert list(SiteClosure.objects.values_list("site__code", "date", "reason")) == [
        ("nih-cc", dt.date(2026, 3, 2), "building move")
    ]
    refused = client.post(
        reverse("admin:trials_siteclosure_add"),
        {"site": site.pk, "date": "2026-03-03", "reason": " "},
    )
    assert refused.status_code == 200
    # The form strips the spaces, so the reason is missing.
    assert "This field is required." in refused.text
    assert SiteClosure.objects.count() == 1
