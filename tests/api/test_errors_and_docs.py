"""Problem details for every error (never a 500 on bad input), and the schema and docs."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import World


def problem(status: int, slug: str, title: str, detail: str, errors: list) -> dict:
    return {
        "type": f"/api/v1/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "errors"),
    [
        (
            "from=2026-13-01",
            [("from", "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.")],
        ),
        (
            "from=99999-01-01",
            [("from", "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.")],
        ),
        ("to=0001-01-01", [("to", "must be on or after 1900-01-01")]),
        ("from=2026-03-08&to=2026-03-02", [("to", "must be on or after 'from'")]),
        ("participant=abc", [("participant", "A valid integer is required.")]),
        (
            "participant=99999999999999999999",
            [("participant", "Ensure this value is less than or equal to 9223372036854775807.")],
        ),
        (
            "status=planned,lost",
            [("status", "unknown status lost; one of planned, booked, done, missed, cancelled")],
        ),
    ],
)
def test_bad_query_parameters_are_named(world: World, query: str, errors: list) -> None:
    response = world.client("coordinator").get(f"/api/v1/visits/?{query}")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["errors"] == [{"field": f, "message": m} for f, m in errors]
    assert body["type"] == "/api/v1/problems/invalid-input"


@pytest.mark.django_db
def test_bad_bodies_are_400s_naming_each_field(world: World) -> None:
    client = world.client("coordinator")
    visit = world.visit("BERLIN-001", "V2")
    url = f"/api/v1/visits/{visit.pk}/book/preview/"

    wrong_types = client.post(url, {"local_date": 5, "local_time": "25:00"}, format="json")
    far_future = client.post(
        url, {"local_date": "9999-12-31", "local_time": "23:59"}, format="json"
    )
    not_an_object = client.post(url, [1, 2], format="json")
    broken_json = client.post(url, "{", content_type="application/json")
    form = client.post(url, "local_date=2026-02-02", content_type="text/plain")

    assert wrong_types.json() == problem(
        400,
        "invalid-input",
        "Invalid input",
        "2 field(s) are invalid",
        [
            {
                "field": "local_date",
                "message": "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
            },
            {
                "field": "local_time",
                "message": "Time has wrong format. Use one of these formats instead: "
                "hh:mm[:ss[.uuuuuu]].",
            },
        ],
    )
    assert far_future.json()["errors"] == [
        {"field": "local_date", "message": "must be on or before 2200-12-31"}
    ]
    assert not_an_object.status_code == 400
    assert not_an_object.json()["errors"] == [
        {"field": None, "message": "Invalid data. Expected a dictionary, but got list."}
    ]
    assert broken_json.status_code == 400
    assert broken_json.json()["type"] == "/api/v1/problems/invalid-input"
    assert form.status_code == 415
    assert form.json()["type"] == "/api/v1/problems/unsupported-media-type"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/visits/987654321/",
        "/api/v1/visits/99999999999999999999999/",
        "/api/v1/visits/abc/",
        "/api/v1/participants/0/calendar/",
        "/api/v1/trials/no-such-trial/versions/9.9/",
        "/api/v1/nothing-here/",
        "/api/v1/visits",
    ],
)
def test_unknown_ids_and_paths_are_problem_404s(world: World, path: str) -> None:
    response = world.client("coordinator").get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/api/v1/problems/not-found"


@pytest.mark.django_db
def test_the_schema_is_openapi_3_and_lists_the_endpoints(world: World) -> None:
    response = world.client("coordinator").get("/api/v1/schema/?format=json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"] == "3.1.0"
    # The webhook subscriptions' paths are listed by their own tests (tests/api/test_webhooks*).
    paths = [p for p in schema["paths"] if not p.startswith("/api/v1/webhooks/")]
    assert sorted(paths) == [
        "/api/v1/enrollments/",
        "/api/v1/feeds/{id}/revoke/",
        "/api/v1/participants/",
        "/api/v1/participants/{id}/",
        "/api/v1/participants/{id}/anchors/{code}/",
        "/api/v1/participants/{id}/anchors/{code}/preview/",
        "/api/v1/participants/{id}/calendar/",
        "/api/v1/participants/{id}/complete/",
        "/api/v1/participants/{id}/eligibility/",
        "/api/v1/participants/{id}/enroll/",
        "/api/v1/participants/{id}/feeds/",
        "/api/v1/participants/{id}/protocol-version/",
        "/api/v1/participants/{id}/protocol-version/preview/",
        "/api/v1/participants/{id}/reminders/",
        "/api/v1/participants/{id}/taper-decisions/",
        "/api/v1/participants/{id}/taper-decisions/preview/",
        "/api/v1/participants/{id}/unscheduled-visits/",
        "/api/v1/participants/{id}/withdraw/",
        "/api/v1/reminders/{id}/",
        "/api/v1/reminders/{id}/retry/",
        "/api/v1/sites/",
        "/api/v1/sites/{code}/",
        "/api/v1/sites/{code}/calendar/",
        "/api/v1/sites/{code}/feeds/",
        "/api/v1/trials/",
        "/api/v1/trials/{code}/",
        "/api/v1/trials/{code}/sites/{site}/approval/",
        "/api/v1/trials/{code}/sites/{site}/approval/preview/",
        "/api/v1/trials/{code}/versions/",
        "/api/v1/trials/{code}/versions/{label}/",
        "/api/v1/visits/",
        "/api/v1/visits/{id}/",
        "/api/v1/visits/{id}/book-slot/",
        "/api/v1/visits/{id}/book/",
        "/api/v1/visits/{id}/book/preview/",
        "/api/v1/visits/{id}/cancel/",
        "/api/v1/visits/{id}/mark-missed/",
        "/api/v1/visits/{id}/record-done/",
        "/api/v1/visits/{id}/record-done/preview/",
        "/api/v1/visits/{id}/reminders/",
        "/api/v1/visits/{id}/slots/",
    ]
    flows = schema["components"]["securitySchemes"]["siteSystem"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "/api/v1/oauth/token/"


@pytest.mark.django_db
def test_the_docs_are_served_from_the_app_without_a_cdn(client) -> None:
    response = client.get("/api/v1/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    urls += re.findall(r"""["'](https?://[^"']+)["']""", page)
    assert urls, "the page loads its scripts from somewhere"
    assert [u for u in urls if not u.startswith("/")] == []
    assert any(u.startswith("/static/drf_spectacular_sidecar/") for u in urls)
    for url in {u.split("?")[0] for u in urls if u.startswith("/static/")}:
        assert client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_the_schema_declares_each_operations_problem_responses(world: World) -> None:
    schema = world.client("coordinator").get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]

    def declared(path: str, method: str) -> list[str]:
        return sorted(paths[path][method]["responses"])

    problem = {"$ref": "#/components/schemas/Problem"}
    not_found = paths["/api/v1/visits/{id}/"]["get"]["responses"]["404"]
    assert not_found["content"] == {"application/problem+json": {"schema": problem}}
    assert schema["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
        "errors",
    ]
    assert declared("/api/v1/trials/", "get") == [
        "200", "400", "401", "403", "404", "406", "429", "503",
    ]  # fmt: skip
    assert declared("/api/v1/visits/{id}/", "get") == [
        "200", "401", "403", "404", "406", "429", "503",
    ]  # fmt: skip
    assert declared("/api/v1/visits/{id}/book/", "post") == [
        "200", "400", "401", "403", "404", "406", "409", "412", "415", "422", "428", "429", "503",
    ]  # fmt: skip
    assert declared("/api/v1/visits/{id}/book/preview/", "post") == [
        "200", "400", "401", "403", "404", "406", "412", "415", "422", "429", "503",
    ]  # fmt: skip
    assert declared("/api/v1/visits/{id}/cancel/", "post") == [
        "200", "400", "401", "403", "404", "406", "412", "415", "422", "428", "429", "503",
    ]  # fmt: skip
    # The two answers that say when to try again declare the header that says it.
    responses = paths["/api/v1/visits/{id}/"]["get"]["responses"]
    retry_after = {"type": "integer", "minimum": 0}
    assert responses["503"]["headers"]["Retry-After"]["schema"] == retry_after
    assert responses["429"]["headers"]["Retry-After"]["schema"] == retry_after
    assert "headers" not in responses["404"]
    preview_headers = [
        p["name"] for p in paths["/api/v1/visits/{id}/book/preview/"]["post"]["parameters"]
    ]
    assert preview_headers == ["If-Match", "id"]


@pytest.mark.django_db
def test_a_path_with_a_newline_is_a_problem_404_not_an_html_page(world: World) -> None:
    # Found by Schemathesis: the catch-all's "." did not match a newline.
    response = world.client("coordinator").get("/api/v1/reminders/%0A/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"] == "no such endpoint (paths end with a slash)"


@pytest.mark.django_db
def test_a_preview_with_if_match_star_checks_nothing(world: World) -> None:
    # Found by Schemathesis: a preview answered 428, which it never declared, for "*".
    visit = world.visit("BERLIN-001", "V2")

    response = world.client("coordinator").post(
        f"/api/v1/visits/{visit.pk}/book/preview/",
        {"local_date": "2026-02-02", "local_time": "09:30"},
        format="json",
        HTTP_IF_MATCH="*",
    )

    assert response.status_code == 200
    assert response["ETag"] == f'"visit-{visit.pk}-v1"'


@pytest.mark.django_db
def test_the_schema_describes_every_webhook_event_the_code_can_send(world: World) -> None:
    from scheduler.models import WebhookSubscription
    from scheduler.outbox.webhooks import VISIT_EVENTS

    schema = world.client("coordinator").get("/api/v1/schema/?format=json").json()
    webhooks = schema["webhooks"]
    components = schema["components"]["schemas"]

    # Every event announce_to_site_systems accepts (it refuses any other), no more.
    assert sorted(webhooks) == sorted(WebhookSubscription.Event.values)
    for event_type, path_item in webhooks.items():
        operation = path_item["post"]
        assert [p["name"] for p in operation["parameters"]] == [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        ]
        assert "space-separated" in operation["parameters"][2]["description"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        payload = components[ref.rsplit("/", 1)[-1]]
        assert payload["properties"]["type"]["enum"] == [event_type]
        data = components[payload["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
        expected = ["participant", "site", "trial"]
        if event_type in VISIT_EVENTS:
            expected.append("visit")
        assert sorted(data["required"]) == sorted(expected), event_type
    participant = components["WebhookParticipantData"]["properties"]
    assert sorted(participant) == [
        "ended_on",
        "enrolled_at",
        "enrolled_on",
        "id",
        "status",
        "study_id",
    ]


@pytest.mark.django_db
def test_the_webhook_schema_matches_what_is_sent(world: World) -> None:
    """A payload built by the code that sends events validates against its schema entry."""
    import datetime as dt

    import jsonschema

    from scheduler.outbox.webhooks import event_payload

    schema = world.client("coordinator").get("/api/v1/schema/?format=json").json()
    components = schema["components"]["schemas"]
    participant = world.people["BERLIN-001"]
    visit = world.visit("BERLIN-001", "V2")
    now = dt.datetime(2026, 1, 20, 8, tzinfo=dt.UTC)
    for event_type in schema["webhooks"]:
        subject = visit if event_type.startswith("visit.") else None
        payload = event_payload(event_type, participant, subject, now)
        operation = schema["webhooks"][event_type]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        jsonschema.validate(
            payload,
            {"$ref": ref, "components": {"schemas": components}},
            cls=jsonschema.Draft202012Validator,
        )
