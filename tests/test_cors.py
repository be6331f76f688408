"""Browsers on other origins (API.md, "Browsers (CORS)"), through the real URLs and middleware."""

import asyncio
import itertools

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import OperationalError
from django.test import RequestFactory

from chat import cors, selectors
from chat.live import http as live_http
from chat.live.app import application as live_application
from tests.support import ApiClient, assert_envelope

SHOP = "https://shop.example"
STRANGER = "https://evil.example"
MESSAGES = "/api/chat/messages"
SESSIONS = "/api/chat/sessions"
GUEST_CREATE = "/api/v1/chat/guest/sessions"
INBOX = "/api/v1/chat/guest/inbox"
EXPOSED = "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, X-Request-ID"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def shop_allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [SHOP]
    settings.CORS_GUEST_ANY_ORIGIN = False


@pytest.fixture
def guest_any_origin(settings):
    settings.CORS_GUEST_ANY_ORIGIN = True


def preflight(client, path, origin=SHOP, method="POST", headers="authorization, content-type", **extra):
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers,
        **extra,
    )


def access_control(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.lower().startswith("access-control-")}


def assert_allowed(response, origin=SHOP) -> None:
    assert response["Access-Control-Allow-Origin"] == origin
    assert response["Access-Control-Expose-Headers"] == EXPOSED
    assert "Access-Control-Allow-Credentials" not in response
    assert "origin" in response["Vary"].lower()


def comma_set(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


@pytest.mark.parametrize("path", [MESSAGES, SESSIONS, INBOX, GUEST_CREATE, "/api/v1/chat/guest/x/events", "/nowhere"])
def test_a_preflight_from_an_allowed_origin_is_answered_before_anything_else(anon, path):
    response = preflight(anon, path, headers="authorization, content-type, x-request-id, last-event-id")

    assert response.status_code in (200, 204)
    assert_allowed(response)
    assert {"get", "post", "delete", "patch", "options"} <= comma_set(response["Access-Control-Allow-Methods"])
    assert {"authorization", "content-type", "x-request-id", "last-event-id"} <= comma_set(
        response["Access-Control-Allow-Headers"]
    )
    assert response["Access-Control-Max-Age"] == "600"
    # Never counted: no rate-limit headers, and still a request with a trace id.
    assert "X-RateLimit-Remaining" not in response
    assert response["X-Request-ID"]


def remaining(response) -> int:
    return int(response["X-RateLimit-Remaining"])


def test_a_preflight_spends_no_budget_of_a_user(alice):
    client = ApiClient(alice.api_token)
    before = remaining(client.get(SESSIONS, HTTP_ORIGIN=SHOP))
    for _ in range(3):
        assert preflight(client, SESSIONS, method="GET").status_code == 200
    assert remaining(client.get(SESSIONS, HTTP_ORIGIN=SHOP)) == before - 1


def test_a_preflight_with_a_bad_token_is_no_401_and_spends_no_anonymous_budget(db):
    client = ApiClient("not-a-token")
    first = client.get(SESSIONS, HTTP_ORIGIN=SHOP)
    assert_envelope(first, 401, "UNAUTHENTICATED")
    assert_allowed(first)
    for _ in range(3):
        response = preflight(client, SESSIONS, method="GET")
        assert response.status_code == 200
        assert response.content == b""
    assert remaining(client.get(SESSIONS, HTTP_ORIGIN=SHOP)) == remaining(first) - 1


def test_a_preflight_spends_no_guest_budget(anon):
    key = anon.generic("POST", GUEST_CREATE, HTTP_ORIGIN=SHOP).json()["data"]["session_key"]
    url = f"/api/v1/chat/guest/{key}/messages"
    before = remaining(anon.get(url, HTTP_ORIGIN=SHOP))
    for _ in range(3):
        assert preflight(anon, url, method="GET", headers="x-request-id").status_code == 200
    assert remaining(anon.get(url, HTTP_ORIGIN=SHOP)) == before - 1


@pytest.mark.parametrize(
    "origin", [STRANGER, "http://shop.example", "https://shop.example:8443", "null", "shop.example"]
)
def test_other_origins_get_no_cors_headers(as_alice, origin):
    assert access_control(preflight(as_alice, MESSAGES, origin=origin)) == {}
    assert access_control(as_alice.get(SESSIONS, HTTP_ORIGIN=origin)) == {}
    assert access_control(as_alice.generic("POST", GUEST_CREATE, HTTP_ORIGIN=origin)) == {}


def test_without_an_origin_there_are_no_cors_headers(as_alice):
    assert access_control(as_alice.get(SESSIONS)) == {}


def test_no_origin_is_allowed_by_default(as_alice, settings):
    settings.CORS_ALLOWED_ORIGINS = []
    assert access_control(preflight(as_alice, MESSAGES)) == {}
    assert access_control(as_alice.get(SESSIONS, HTTP_ORIGIN=SHOP)) == {}


def test_answers_to_an_allowed_origin_carry_the_headers(as_alice):
    response = as_alice.post_json(MESSAGES, {"sessionId": "s1", "message": {"role": "user"}}, HTTP_ORIGIN=SHOP)
    assert response.status_code == 201
    assert_allowed(response)
    assert "Access-Control-Allow-Methods" not in response  # only on preflights


def test_errors_to_an_allowed_origin_carry_the_headers(anon, as_alice, settings, monkeypatch):
    assert_allowed(assert_envelope_response(anon.get(SESSIONS, HTTP_ORIGIN=SHOP), 401))
    assert_allowed(assert_envelope_response(as_alice.get("/api/nowhere", HTTP_ORIGIN=SHOP), 404))
    assert_allowed(assert_envelope_response(as_alice.get(MESSAGES, HTTP_ORIGIN=SHOP), 400))
    assert_allowed(assert_envelope_response(as_alice.put(MESSAGES, HTTP_ORIGIN=SHOP), 405))
    too_big = b'{"x": "' + b"a" * settings.MAX_REQUEST_BODY_BYTES + b'"}'
    assert_allowed(
        assert_envelope_response(
            as_alice.post(MESSAGES, too_big, content_type="application/json", HTTP_ORIGIN=SHOP), 413
        )
    )

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "session_history", explode)
    assert_allowed(assert_envelope_response(as_alice.get(MESSAGES, {"session_id": "s1"}, HTTP_ORIGIN=SHOP), 500))

    def database_down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(selectors, "session_history", database_down)
    assert_allowed(assert_envelope_response(as_alice.get(MESSAGES, {"session_id": "s1"}, HTTP_ORIGIN=SHOP), 503))

    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user:free": "1/hour"}
    as_alice.get(SESSIONS, HTTP_ORIGIN=SHOP)
    limited = as_alice.get(SESSIONS, HTTP_ORIGIN=SHOP)
    assert_allowed(assert_envelope_response(limited, 429))
    assert limited["Retry-After"]


def assert_envelope_response(response, status: int):
    assert_envelope(response, status)
    return response


def test_guest_any_origin_opens_only_the_guest_endpoints_with_a_star(anon, as_alice, as_staff, guest_any_origin):
    created = anon.generic("POST", GUEST_CREATE, HTTP_ORIGIN=STRANGER)
    assert created.status_code == 201
    assert_allowed(created, origin="*")
    key = created.json()["data"]["session_key"]
    messages = f"/api/v1/chat/guest/{key}/messages"
    assert_allowed(anon.post_json(messages, {"content": "hi"}, HTTP_ORIGIN=STRANGER), origin="*")
    assert_allowed(anon.get(messages, HTTP_ORIGIN=STRANGER), origin="*")
    assert_allowed(anon.get("/api/v1/chat/guest/not-a-key/messages", HTTP_ORIGIN=STRANGER), origin="*")
    assert_allowed(preflight(anon, messages, origin=STRANGER), origin="*")
    assert_allowed(preflight(anon, f"/api/v1/chat/guest/{key}/events", origin=STRANGER, method="GET"), origin="*")
    # The allowed origin gets the same answer there.
    assert_allowed(anon.get(messages, HTTP_ORIGIN=SHOP), origin="*")

    # Staff and authenticated endpoints stay closed to other origins.
    assert access_control(as_staff.get(INBOX, HTTP_ORIGIN=STRANGER)) == {}
    assert access_control(preflight(as_staff, f"{INBOX}/events", origin=STRANGER, method="GET")) == {}
    replies = f"/api/v1/chat/guest/{key}/replies"
    assert access_control(as_staff.post_json(replies, {"content": "hello"}, HTTP_ORIGIN=STRANGER)) == {}
    assert access_control(preflight(as_alice, MESSAGES, origin=STRANGER)) == {}
    assert access_control(as_alice.get(SESSIONS, HTTP_ORIGIN=STRANGER)) == {}
    # ... and open to the allowed origin.
    assert_allowed(as_staff.get(INBOX, HTTP_ORIGIN=SHOP))


def test_guest_endpoints_are_closed_to_other_origins_without_guest_any_origin(anon):
    assert access_control(anon.generic("POST", GUEST_CREATE, HTTP_ORIGIN=STRANGER)) == {}
    assert access_control(preflight(anon, GUEST_CREATE, origin=STRANGER)) == {}


@pytest.mark.parametrize("guest_any", [False, True])
def test_cors_headers_gives_the_asgi_side_exactly_what_the_middleware_sends(anon, settings, guest_any):
    """chat.cors.cors_headers is what a server without Django middleware calls: same rules, same headers."""
    settings.CORS_GUEST_ANY_ORIGIN = guest_any
    paths = [MESSAGES, INBOX, f"{INBOX}/events", GUEST_CREATE, "/api/v1/chat/guest/k/events", "/healthz"]
    for origin, path, method in itertools.product([SHOP, STRANGER, None], paths, ["GET", "OPTIONS"]):
        extra = {"HTTP_ORIGIN": origin} if origin else {}
        if method == "OPTIONS":
            response = preflight(anon, path, origin=origin) if origin else anon.options(path)
        else:
            response = anon.get(path, **extra)
        expected = cors.cors_headers(origin=origin, path=path, method=method)
        assert access_control(response) == expected, (origin, path, method)


def test_is_preflight_needs_options_and_a_requested_method():
    assert cors.is_preflight("OPTIONS", {"Access-Control-Request-Method": "POST"})
    assert cors.is_preflight("OPTIONS", {"access-control-request-method": "GET"})
    assert not cors.is_preflight("OPTIONS", {})
    assert not cors.is_preflight("GET", {"Access-Control-Request-Method": "GET"})
    request = RequestFactory().options(MESSAGES, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert cors.is_preflight(request.method, request.headers)


@pytest.mark.parametrize("origin", ["shop.example", "https://shop.example/path"])
def test_a_malformed_allowed_origin_fails_the_system_checks(settings, origin):
    settings.CORS_ALLOWED_ORIGINS = [origin]
    with pytest.raises(SystemCheckError, match="CORS_ALLOWED_ORIGINS"):
        call_command("check")


# The ASGI waiting side (chat.live), which runs no Django middleware, applies the same function.


def asgi_scope(method: str, path: str, headers: dict[str, str]) -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "client": ("127.0.0.1", 5000),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
    }


def call_live(scope: dict) -> tuple[int, dict[str, str]]:
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(live_application(scope, receive, send))
    start = sent[0]
    return start["status"], {name.decode(): value.decode() for name, value in start["headers"]}


@pytest.mark.parametrize("path", ["/api/v1/chat/guest/k/events", "/api/v1/chat/guest/inbox/events"])
def test_the_live_app_answers_a_preflight_like_django_before_anything_else(anon, path, guest_any_origin):
    headers = {"Origin": SHOP, "Access-Control-Request-Method": "GET", "Authorization": "Token not-a-token"}
    status, live = call_live(asgi_scope("OPTIONS", path, headers))
    django = preflight(anon, path, method="GET", HTTP_AUTHORIZATION="Token not-a-token")
    assert status == django.status_code == 200
    assert {k: v for k, v in live.items() if k.lower().startswith("access-control-")} == access_control(django)
    assert live["Vary"] == "Origin" and live["X-Request-ID"]
    assert "X-RateLimit-Remaining" not in live

    _, other = call_live(asgi_scope("OPTIONS", path, {**headers, "Origin": STRANGER}))
    if "inbox" in path:
        assert not any(name.lower().startswith("access-control-") for name in other)
    else:
        assert other["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("guest_any", [False, True])
def test_the_live_apps_headers_are_chat_cors_headers(settings, guest_any):
    settings.CORS_GUEST_ANY_ORIGIN = guest_any
    paths = ["/api/v1/chat/guest/k/events", "/api/v1/chat/guest/k/messages", "/api/v1/chat/guest/inbox/events"]
    for origin, path, method in itertools.product([SHOP, STRANGER], paths, ["GET", "OPTIONS"]):
        request = live_http.LiveRequest(asgi_scope(method, path, {"Origin": origin}))
        sent = dict((k.decode(), v.decode()) for k, v in live_http.response_headers(request))
        expected = cors.cors_headers(origin=origin, path=path, method=method)
        assert {k: v for k, v in sent.items() if k.startswith("Access-Control-")} == expected, (origin, path)
        assert sent["Vary"] == "Origin"
