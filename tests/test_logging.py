"""The JSON request log: one line per request, the trace id on every line, no secrets."""

import io
import json
import logging

import pytest
from django.test import Client

from chat import services
from chat.logging import JsonFormatter

URL = "/api/chat/messages"


@pytest.fixture
def log_lines():
    """What the configured console handler (settings.LOGGING) writes, as parsed JSON lines."""
    handlers = {h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)}
    assert len(handlers) == 1, "settings.LOGGING configures one JSON console handler"
    (handler,) = handlers
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    raw: list[str] = []

    def lines() -> list[dict]:
        raw[:] = buffer.getvalue().splitlines()
        return [json.loads(line) for line in raw]

    lines.text = lambda: buffer.getvalue()
    try:
        yield lines
    finally:
        handler.setStream(previous)


def request_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "chat.request"]


def test_each_request_is_one_json_line_with_route_status_duration_user_scope_and_trace_id(as_alice, alice, log_lines):
    response = as_alice.get(URL, {"session_id": "s-unknown"}, HTTP_X_REQUEST_ID="trace-abc.1")
    assert response.status_code == 404

    (line,) = request_lines(log_lines())
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["route"] == "api/chat/messages"
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["user"] == str(alice.pk)
    assert line["rate_limit_scope"] == "user:free"
    assert line["trace_id"] == "trace-abc.1" == response["X-Request-ID"]


def test_the_route_is_the_url_pattern_not_the_path(as_alice, log_lines):
    as_alice.delete("/api/chat/sessions/private-session-name")
    (line,) = request_lines(log_lines())
    assert line["route"] == "api/chat/sessions/<str:session_id>"
    assert "private-session-name" not in log_lines.text()


def test_a_response_made_before_routing_is_logged_with_its_route(anon, log_lines):
    response = anon.post("/admin/login/", b"x" * 2_000_000, content_type="application/json")
    assert response.status_code == 413
    (line,) = request_lines(log_lines())
    assert (line["route"], line["status"], line["user"]) == ("admin/login/", 413, "anonymous")


def test_a_413_of_the_api_is_logged_with_its_caller_and_limit(as_alice, alice, log_lines):
    response = as_alice.post(URL, b"x" * 2_000_000, content_type="application/json")
    assert response.status_code == 413
    (line,) = request_lines(log_lines())
    assert (line["route"], line["status"], line["user"]) == ("api/chat/messages", 413, str(alice.pk))
    assert line["rate_limit_scope"] == "user:free"


def test_callers_without_credentials_are_anonymous(anon, log_lines):
    anon.get("/api/chat/sessions")
    anon.get("/healthz")
    lines = request_lines(log_lines())
    assert [(line["route"], line["status"], line["user"]) for line in lines] == [
        ("api/chat/sessions", 401, "anonymous"),
        ("healthz", 200, "anonymous"),
    ]
    assert lines[0]["rate_limit_scope"] == "anon"
    assert lines[1]["rate_limit_scope"] is None


def test_every_line_logged_during_a_request_carries_its_trace_id(as_alice, settings, log_lines):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user:free": "1/hour"}
    as_alice.get("/api/chat/sessions")
    as_alice.get("/api/chat/sessions", HTTP_X_REQUEST_ID="limited-request")  # the limiter logs the 429

    lines = [line for line in log_lines() if line["trace_id"] == "limited-request"]
    assert {line["logger"] for line in lines} == {"chat.throttles", "chat.request"}
    assert all(line["trace_id"] for line in log_lines())
    # Outside a request there is no trace id.
    logging.getLogger("chat.test").warning("between requests")
    assert log_lines()[-1]["trace_id"] is None


def test_tokens_and_message_content_never_appear_in_the_logs(alice, as_alice, log_lines):
    content = "my-very-private-message-content-7f3a"
    response = as_alice.post_json(
        URL,
        {"sessionId": "s1", "sessionTitle": "private-title-9c1d", "message": {"role": "user", "content": content}},
    )
    assert response.status_code == 201
    bearer = Client(HTTP_AUTHORIZATION=f"Bearer {alice.api_token}")
    assert bearer.get(URL, {"session_id": "s1"}).status_code == 200
    bad = Client(HTTP_AUTHORIZATION="Token not-a-real-token-5e2b")
    assert bad.get(URL, {"session_id": "s1"}).status_code == 401

    text = log_lines.text()
    assert len(request_lines(log_lines())) == 3
    for secret in (alice.api_token, content, "private-title-9c1d", "not-a-real-token-5e2b"):
        assert secret not in text


def test_passwords_never_appear_in_the_logs(staff, log_lines):
    staff.set_password("correct-horse-battery-staple-42")
    staff.save()
    client = Client()
    client.post("/admin/login/", {"username": staff.username, "password": "wrong-password-61b0"})
    client.post("/admin/login/", {"username": staff.username, "password": "correct-horse-battery-staple-42"})
    lines = request_lines(log_lines())
    assert [line["route"] for line in lines] == ["admin/login/", "admin/login/"]
    assert lines[1]["status"] == 302
    text = log_lines.text()
    assert "wrong-password-61b0" not in text and "correct-horse-battery-staple-42" not in text


def test_a_server_error_logs_the_route_but_never_the_body_or_path(as_alice, monkeypatch, log_lines):
    def crash(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "messages_save", crash)
    content = "content-of-a-crashing-request-b81e"
    response = as_alice.post_json(
        URL, {"sessionId": "crash-session-77", "message": {"role": "user", "content": content}}
    )
    assert response.status_code == 500

    lines = log_lines()
    django_lines = [line for line in lines if line["logger"] == "django.request"]
    assert [line["message"] for line in django_lines] == ["Internal Server Error: api/chat/messages"]
    assert "request" not in django_lines[0]
    assert {line["trace_id"] for line in lines} == {response["X-Request-ID"]}
    text = log_lines.text()
    assert content not in text and as_alice.defaults["HTTP_AUTHORIZATION"].split()[1] not in text


def test_guest_requests_are_logged_as_guest_without_their_session_key(anon, log_lines):
    key = anon.post_json("/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    anon.post_json(f"/api/v1/chat/guest/{key}/messages", {"content": "guest-secret-content-0d4e"})
    anon.get(f"/api/v1/chat/guest/{key}/messages")
    route = "api/v1/chat/guest/<str:session_key>/messages"
    assert [
        (line["route"], line["status"], line["user"], line["rate_limit_scope"]) for line in request_lines(log_lines())
    ] == [
        ("api/v1/chat/guest/sessions", 201, "guest", "guest_create"),
        (route, 201, "guest", "guest_send"),
        (route, 200, "guest", "guest_poll"),
    ]
    text = log_lines.text()
    assert key not in text and key.replace("-", "") not in text and "guest-secret-content-0d4e" not in text


@pytest.mark.parametrize("host", ["evil.example", "x" * 5000 + ".example"])
def test_a_bad_host_header_is_one_short_line_without_a_traceback(anon, log_lines, host):
    response = anon.get("/healthz", HTTP_HOST=host)
    assert response.status_code == 400
    [line] = [line for line in log_lines() if line["logger"].startswith("django.security")]
    assert line["logger"] == "django.security.DisallowedHost"
    assert "exc_info" not in line
    assert len(json.dumps(line)) < 600
