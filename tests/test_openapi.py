"""The OpenAPI schema: generated without warnings, served, with a local Swagger UI."""

import io
import json
import re

import yaml
from django.core.management import call_command


def test_schema_generates_without_warnings_and_validates(db):
    out = io.StringIO()
    # --fail-on-warn turns any warning into an error; --validate checks it against the OpenAPI 3 spec.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["openapi"].startswith("3.")


def test_schema_is_served_and_documents_the_endpoints(anon):
    response = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/chat/messages"])
    assert "get" in paths["/api/chat/sessions"]
    assert "delete" in paths["/api/chat/sessions/{session_id}"]

    post = paths["/api/chat/messages"]["post"]
    assert set(post["responses"]) >= {"201", "400", "401", "403", "413", "415", "429"}
    assert post["responses"]["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
        post["responses"]["201"]["headers"]
    )
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert schema["components"]["securitySchemes"]["tokenAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["tokenAuth"]["description"],
    }


def test_swagger_ui_is_served_with_local_assets(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page


def test_schema_documents_the_operations_endpoints(anon):
    paths = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "405"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503", "405"}
    assert {"200", "401", "403"} <= set(paths["/metrics"]["get"]["responses"])


def test_swagger_ui_has_no_validator_and_the_page_names_no_other_host(anon):
    """Swagger UI's default sends the schema to validator.swagger.io from any non-localhost host."""
    page = anon.get("/api/docs/", HTTP_HOST="localhost").content.decode()
    settings_json = re.search(r"const swaggerSettings = (\{.*?\});", page, re.S)
    assert settings_json, "the page carries Swagger UI's settings"
    assert json.loads(settings_json[1])["validatorUrl"] is None
    # Every URL the page loads or calls is a path on this server: no scheme, no //host.
    assert not re.search(r"(https?:)?//[A-Za-z0-9]", page), re.findall(r"\S*//\S*", page)
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith("/"), url


def test_operations_are_tagged_by_the_apis_parts_not_the_urls_first_word(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    tags = {
        (path, method): operation["tags"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert tags[("/api/v1/chat/guest/sessions", "post")] == ["Guest chat"]
    assert tags[("/api/v1/chat/guest/{session_key}/messages", "get")] == ["Guest chat"]
    assert tags[("/api/chat/messages", "post")] == ["Messages"]
    assert tags[("/api/chat/sessions", "get")] == ["Sessions"]
    assert tags[("/metrics", "get")] == ["Operations"]
    used = {tag for names in tags.values() for tag in names}
    assert not used & {"v1", "chat", "api", "operations"}
    # Each tag is declared once, the known parts with a description.
    declared = {tag["name"]: tag.get("description") for tag in schema["tags"]}
    assert set(declared) == used
    assert all(declared[name] for name in ("Guest chat", "Messages", "Sessions", "Operations"))


def test_schema_documents_wait_and_the_event_streams(anon):
    paths = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    poll = paths["/api/v1/chat/guest/{session_key}/messages"]["get"]
    [wait] = [p for p in poll["parameters"] if p["name"] == "wait"]
    assert wait["in"] == "query" and wait["schema"] == {"type": "integer", "minimum": 0, "maximum": 30}

    guest = paths["/api/v1/chat/guest/{session_key}/events"]["get"]
    assert "text/event-stream" in guest["responses"]["200"]["content"]
    assert {"400", "404", "429"} <= set(guest["responses"])
    assert "Last-Event-ID" in {p["name"] for p in guest["parameters"]}
    assert "event: message" in guest["description"]

    inbox = paths["/api/v1/chat/guest/inbox/events"]["get"]
    assert "text/event-stream" in inbox["responses"]["200"]["content"]
    assert {"401", "403"} <= set(inbox["responses"])
    assert "event: session" in inbox["description"]


def test_schema_documents_long_histories(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    history = paths["/api/chat/messages"]["get"]
    params = {p["name"]: p for p in history["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert params["before"]["in"] == "query" and params["If-None-Match"]["in"] == "header"
    assert {"200", "304", "400", "403", "404"} <= set(history["responses"])
    assert {"ETag", "Link", "Cache-Control"} <= set(history["responses"]["200"]["headers"])
    assert "ETag" in history["responses"]["304"]["headers"]
    assert "content" not in history["responses"]["304"]

    delete = paths["/api/chat/messages/{message_id}"]["delete"]
    assert {"204", "400", "403", "404"} <= set(delete["responses"])
    assert any(p["name"] == "session_id" and p["required"] for p in delete["parameters"])
    rename = paths["/api/chat/sessions/{session_id}"]["patch"]
    body = rename["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][body]["required"] == ["title"]
    assert rename["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatSession")


def test_text_that_must_not_be_blank_says_so_and_the_api_agrees(as_alice, as_staff):
    """A title or a guest message of only whitespace is a 400: the schema's pattern refuses it too.

    The fuzzer found "\\r" as a staff reply: schema-valid (minLength 1), refused as blank.
    Whitespace is str.strip()'s, the Unicode ones and U+001C-U+001F included.
    """
    schemas = json.loads(as_alice.get("/api/schema/", {"format": "json"}).content)["components"]["schemas"]
    fields = [("SessionRenameRequest", "title"), ("GuestMessageRequest", "content"), ("GuestReplyRequest", "content")]
    patterns = {schemas[name]["properties"][field].get("pattern") for name, field in fields}
    assert len(patterns) == 1
    pattern = patterns.pop()
    assert pattern is not None

    as_alice.post_json("/api/chat/messages", {"sessionId": "s1", "message": {"role": "user", "content": "Hi"}})
    key = as_alice.post_json("/api/v1/chat/guest/sessions", {}).json()["data"]["session_key"]
    for text, accepted in [("\r", False), (" \u3000\x1c\x85", False), ("\t\n", False), ("a", True), (" ok ", True)]:
        assert bool(re.fullmatch(pattern, text)) is accepted, repr(text)
        answers = [
            as_alice.patch("/api/chat/sessions/s1", {"title": text}, content_type="application/json"),
            as_alice.post_json(f"/api/v1/chat/guest/{key}/messages", {"content": text}),
            as_staff.post_json(f"/api/v1/chat/guest/{key}/replies", {"content": text}),
        ]
        assert [answer.status_code for answer in answers] == ([200, 201, 201] if accepted else [400] * 3), repr(text)
