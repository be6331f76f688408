"""Rate limits through the real URLs: tiers, anonymous callers, the headers on every answer."""

import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import path
from redis.connection import AbstractConnection
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from accounts.models import Tier
from chat import throttles
from chat.api.base import ApiView
from tests.support import ApiClient, FakeClock, assert_429, assert_rate_headers, make_user

SESSIONS = "/api/chat/sessions"
MESSAGES = "/api/chat/messages"
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def remaining(response) -> int:
    return int(response["X-RateLimit-Remaining"])


@pytest.fixture
def limits(settings):
    """Set some limits for one test; the rest keep their defaults."""

    def set_limits(**rates):
        settings.RATE_LIMITS = {**settings.RATE_LIMITS, **{k.replace("__", ":"): v for k, v in rates.items()}}

    return set_limits


@pytest.fixture(autouse=True)
def steady_clock(monkeypatch):
    """Mid-hour and mid-minute, so that no test's requests straddle two windows."""
    monkeypatch.setattr(throttles.limiter, "clock", FakeClock("2025-08-07T09:15:30+00:00"))


def test_a_free_user_gets_100_requests_an_hour_then_429(as_alice):
    answers = [as_alice.get(SESSIONS) for _ in range(100)]
    assert {r.status_code for r in answers} == {200}
    assert [remaining(r) for r in answers] == list(range(99, -1, -1))
    assert {r["X-RateLimit-Limit"] for r in answers} == {"100"}
    assert all("Retry-After" not in r for r in answers)

    assert_429(as_alice.get(SESSIONS), limit=100)
    assert_429(as_alice.post_json(MESSAGES, {"sessionId": "s1", "message": {"role": "user"}}), limit=100)


def test_one_budget_covers_every_authenticated_endpoint(as_alice, limits):
    limits(user__free="4/hour")
    assert remaining(as_alice.post_json(MESSAGES, {"sessionId": "s1", "message": {"role": "user"}})) == 3
    assert remaining(as_alice.get(MESSAGES, {"session_id": "s1"})) == 2
    assert remaining(as_alice.get(SESSIONS)) == 1
    assert remaining(as_alice.delete(f"{SESSIONS}/s1")) == 0
    assert_429(as_alice.get(SESSIONS), limit=4)


def test_each_user_has_a_budget_of_their_own(as_alice, as_charlie, limits):
    limits(user__free="2/hour")
    as_alice.get(SESSIONS), as_alice.get(SESSIONS)
    assert as_alice.get(SESSIONS).status_code == 429
    assert as_charlie.get(SESSIONS).status_code == 200


def test_pro_and_enterprise_tiers_have_their_own_limits(as_bob, db, limits):
    assert_rate_headers(as_bob.get(SESSIONS), limit=500, left=499)
    dana = make_user("dana", tier=Tier.ENTERPRISE)
    as_dana = ApiClient(dana.api_token)
    response = as_dana.get(SESSIONS)
    assert_rate_headers(response, limit=2000, left=1999)
    assert response.wsgi_request.rate_limit_scope == "user:enterprise"

    limits(user__pro="3/hour", user__enterprise="4/hour")
    assert [as_bob.get(SESSIONS).status_code for _ in range(3)] == [200, 200, 429]
    assert [as_dana.get(SESSIONS).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_tier_change_applies_to_the_next_request(as_alice, alice, limits):
    limits(user__free="3/hour", user__pro="5/hour")
    assert [as_alice.get(SESSIONS).status_code for _ in range(4)] == [200, 200, 200, 429]

    call_command("set_tier", "alice", "pro", stdout=None)

    # The requests already counted stay counted; only the limit moved.
    response = as_alice.get(SESSIONS)
    assert response.status_code == 200
    assert_rate_headers(response, limit=5, left=0)
    assert response.wsgi_request.rate_limit_scope == "user:pro"
    assert_429(as_alice.get(SESSIONS), limit=5)


def test_anonymous_callers_get_20_an_hour_per_ip_counted_before_the_401(anon, alice):
    no_credentials = [anon.get(SESSIONS) for _ in range(10)]
    bad_token = [anon.get(SESSIONS, HTTP_AUTHORIZATION="Token 0123456789abcdef") for _ in range(5)]
    bad_header = [anon.get(MESSAGES, HTTP_AUTHORIZATION="Bearer a b") for _ in range(5)]
    answers = no_credentials + bad_token + bad_header

    assert {r.status_code for r in answers} == {401}
    assert {r.json()["error"]["code"] for r in answers} == {"UNAUTHENTICATED"}
    assert [remaining(r) for r in answers] == list(range(19, -1, -1))
    assert {r["X-RateLimit-Limit"] for r in answers} == {"20"}
    assert answers[0].wsgi_request.rate_limit_scope == "anon"

    # The 21st guess is refused before its credentials are looked at.
    assert_429(anon.get(SESSIONS, HTTP_AUTHORIZATION="Token 0123456789abcdef"), limit=20)
    assert_429(anon.get(SESSIONS), limit=20)
    assert_429(anon.get(SESSIONS, HTTP_AUTHORIZATION=f"Token {alice.api_token}x"), limit=20)

    # A valid token from the same address spends the user's budget, not the address's.
    response = ApiClient(alice.api_token).get(SESSIONS)
    assert response.status_code == 200
    assert_rate_headers(response, limit=100, left=99)


def test_errors_carry_the_headers_and_spend_the_budget(as_alice, as_charlie, anon):
    as_alice.post_json(MESSAGES, {"sessionId": "alices", "message": {"role": "user"}})
    answers = {
        400: as_charlie.get(MESSAGES),
        403: as_charlie.get(MESSAGES, {"session_id": "alices"}),
        404: as_charlie.get(MESSAGES, {"session_id": "nobody"}),
        405: as_charlie.put(MESSAGES, {}, content_type="application/json"),
        413: as_charlie.post(MESSAGES, b"x" * (1024 * 1024 + 1), content_type="application/json"),
        415: as_charlie.post(MESSAGES, "hello", content_type="text/plain"),
    }
    assert {status: r.status_code for status, r in answers.items()} == {s: s for s in answers}
    assert [remaining(r) for r in answers.values()] == [99, 98, 97, 96, 95, 94]
    for response in answers.values():
        assert_rate_headers(response, limit=100, left=remaining(response))
        assert "Retry-After" not in response

    unauthenticated = anon.get(SESSIONS)
    assert unauthenticated.status_code == 401
    assert_rate_headers(unauthenticated, limit=20, left=19)
    assert "Retry-After" not in unauthenticated


def test_the_reset_header_is_the_real_end_of_the_window_and_retry_after_matches_the_body(as_alice, limits, monkeypatch):
    limits(user__free="2/hour")
    monkeypatch.setattr(throttles.limiter, "clock", FakeClock("2025-08-07T09:29:59.500+00:00"))
    first = as_alice.get(SESSIONS)
    assert first["X-RateLimit-Reset"] == "2025-08-07T10:00:00.000Z"
    as_alice.get(SESSIONS)
    refused = as_alice.get(SESSIONS)

    assert_429(refused, limit=2)
    assert refused["X-RateLimit-Reset"] == "2025-08-07T10:00:00.000Z"
    assert refused["Retry-After"] == "1801"  # 1800.5 seconds, rounded up
    assert refused.json()["error"]["details"] == {"retry_after": 1801}

    throttles.limiter.clock.now = datetime.fromisoformat("2025-08-07T10:00:00+00:00").timestamp()
    fresh = as_alice.get(SESSIONS)
    assert fresh.status_code == 200
    assert_rate_headers(fresh, limit=2, left=1)
    assert fresh["X-RateLimit-Reset"] == "2025-08-07T11:00:00.000Z"


def test_x_forwarded_for_is_ignored_without_trusted_proxies(anon, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    first = anon.get(SESSIONS, HTTP_X_FORWARDED_FOR="198.51.100.1")
    second = anon.get(SESSIONS, HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert [remaining(first), remaining(second)] == [19, 18]


def test_x_forwarded_for_is_honoured_through_one_trusted_proxy(anon, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    first = anon.get(SESSIONS, HTTP_X_FORWARDED_FOR="198.51.100.1")
    second = anon.get(SESSIONS, HTTP_X_FORWARDED_FOR="198.51.100.2")
    # The client may prepend anything; the proxy's own entry (the last) decides.
    spoofed = anon.get(SESSIONS, HTTP_X_FORWARDED_FOR="203.0.113.9, 198.51.100.1")
    assert [remaining(first), remaining(second), remaining(spoofed)] == [19, 19, 18]


def test_limits_can_be_switched_off(as_alice, limits, settings):
    limits(user__free="1/hour")
    settings.RATE_LIMIT_ENABLED = False
    answers = [as_alice.get(SESSIONS) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert not any(header in r for r in answers for header in RATE_HEADERS)


def test_every_429_is_signalled_with_its_scope(as_alice, limits):
    limits(user__free="1/hour")
    seen = []

    def receiver(sender, scope, request, **kwargs):
        seen.append((sender.__name__, scope, request.path))

    throttles.rate_limited.connect(receiver)
    try:
        as_alice.get(SESSIONS)
        as_alice.get(SESSIONS)
    finally:
        throttles.rate_limited.disconnect(receiver)
    assert seen == [("ChatSessionListApi", "user:free", SESSIONS)]


# Views declaring the guest scopes, as the guest endpoints do, on a URLconf of this module.


class PollApi(ApiView):
    """Polls like a guest: limited per session key and per IP."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scopes = ("guest_poll", "guest_ip")

    def get(self, request, session_key):
        return Response({"session_key": session_key})


class HealthApi(ApiView):
    """No limit at all."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scopes = ()

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("poll/<str:session_key>", PollApi.as_view()),
    path("health", HealthApi.as_view()),
]


@pytest.mark.urls("tests.test_rate_limits")
def test_guest_scopes_count_per_session_key_and_per_ip_and_show_the_binding_one(limits):
    limits(guest_poll="2/minute", guest_ip="4/minute")
    guest = ApiClient()
    first = guest.get("/poll/key-a")
    assert first.wsgi_request.rate_limit_scope == "guest_poll"
    assert_rate_headers(first, limit=2, left=1)
    assert guest.get("/poll/key-a").status_code == 200
    refused = guest.get("/poll/key-a")
    assert_429(refused, limit=2)
    assert refused.wsgi_request.rate_limit_scope == "guest_poll"

    # Another session key has its own poll budget; the IP's flood guard is now the tighter one.
    other = guest.get("/poll/key-b")
    assert other.status_code == 200
    assert_rate_headers(other, limit=4, left=0)
    assert other.wsgi_request.rate_limit_scope == "guest_ip"
    flooded = guest.get("/poll/key-c")
    assert_429(flooded, limit=4)
    assert flooded.wsgi_request.rate_limit_scope == "guest_ip"


def test_a_guest_send_over_the_size_limit_is_a_413_that_spends_the_budget(db, limits):
    limits(guest_send="2/minute")
    guest = ApiClient()
    key = guest.generic("POST", "/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    url = f"/api/v1/chat/guest/{key}/messages"
    big = b'{"content": "' + b"x" * (1024 * 1024) + b'"}'

    too_large = guest.post(url, big, content_type="application/json")

    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert_rate_headers(too_large, limit=2, left=1)
    assert guest.post_json(url, {"content": "hi"}).status_code == 201
    assert_429(guest.post(url, big, content_type="application/json"), limit=2)


def test_a_body_over_the_limit_on_other_urls_is_still_a_413(as_alice, staff_browser):
    big = b"x" * (1024 * 1024 + 1)
    assert as_alice.post("/api/no-such-endpoint", big, content_type="application/json").status_code == 413
    assert staff_browser.post("/admin/", big, content_type="application/json").status_code == 413


@pytest.mark.urls("tests.test_rate_limits")
def test_a_view_without_scopes_is_not_limited(limits):
    limits(anon="1/hour", guest_ip="1/hour")
    answers = [ApiClient().get("/health") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert not any(header in r for r in answers for header in RATE_HEADERS)


@pytest.mark.redis
@pytest.mark.urls("tests.test_rate_limits")
def test_a_request_spending_two_limits_costs_one_redis_round_trip(monkeypatch):
    guest = ApiClient()
    guest.get("/poll/key-a")  # the connection's handshake belongs to no request
    sends = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sends.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    response = guest.get("/poll/key-a")
    monkeypatch.undo()

    assert response.status_code == 200
    assert_rate_headers(response, limit=60, left=58)
    assert len(sends) == 1


@pytest.mark.parametrize(
    ("value", "outcome"),
    [("250/hour", "250/hour"), ("5/h", "must be <requests>/<second|minute|hour|day>, not '5/h'")],
)
def test_each_limit_can_be_overridden_from_the_environment_and_a_bad_one_stops_the_start(value, outcome):
    env = {**os.environ, "SECRET_KEY": "x", "RATE_LIMIT_USER_PRO": value}
    result = subprocess.run(
        [sys.executable, "-c", "from chatsite import settings; print(settings.RATE_LIMITS['user:pro'])"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert outcome in result.stdout + result.stderr
    assert (result.returncode == 0) == (value == outcome)


# The guest rows of the table, through the real guest URLs.

GUEST_CREATE = "/api/v1/chat/guest/sessions"


def guest_messages(key: str) -> str:
    return f"/api/v1/chat/guest/{key}/messages"


def new_guest_key(client) -> str:
    response = client.generic("POST", GUEST_CREATE)
    assert response.status_code == 201
    return response.json()["data"]["session_key"]


def test_guest_session_creation_is_10_an_hour_per_ip(db):
    guest = ApiClient()
    answers = [guest.generic("POST", GUEST_CREATE) for _ in range(10)]
    assert [r.status_code for r in answers] == [201] * 10
    assert answers[0].wsgi_request.rate_limit_scope == "guest_create"
    assert [remaining(r) for r in answers] == list(range(9, -1, -1))

    assert_429(guest.generic("POST", GUEST_CREATE), limit=10)
    # Another address may still start one.
    assert guest.generic("POST", GUEST_CREATE, REMOTE_ADDR="198.51.100.7").status_code == 201


def test_guest_polling_is_60_a_minute_per_session_key(db):
    guest = ApiClient()
    key, other_key = new_guest_key(guest), new_guest_key(guest)
    answers = [guest.get(guest_messages(key)) for _ in range(60)]
    assert {r.status_code for r in answers} == {200}
    assert [remaining(r) for r in answers] == list(range(59, -1, -1))
    assert {r.wsgi_request.rate_limit_scope for r in answers} == {"guest_poll"}
    assert answers[-1]["X-RateLimit-Reset"] == "2025-08-07T09:16:00.000Z"

    refused = guest.get(guest_messages(key))
    assert_429(refused, limit=60)
    assert refused["Retry-After"] == "30"
    assert guest.get(guest_messages(other_key)).status_code == 200


def test_guest_sending_is_30_a_minute_per_session_key_apart_from_polling(db):
    guest = ApiClient()
    key = new_guest_key(guest)
    answers = [guest.post_json(guest_messages(key), {"content": f"m{i}"}) for i in range(30)]
    assert {r.status_code for r in answers} == {201}
    assert answers[0].wsgi_request.rate_limit_scope == "guest_send"
    assert_rate_headers(answers[-1], limit=30, left=0)

    assert_429(guest.post_json(guest_messages(key), {"content": "one more"}), limit=30)
    polled = guest.get(guest_messages(key))
    assert polled.status_code == 200
    assert_rate_headers(polled, limit=60, left=59)


def test_every_guest_endpoint_together_is_limited_per_ip(db, limits):
    limits(guest_ip="5/minute")
    guest = ApiClient()
    key = new_guest_key(guest)  # 1
    guest.get(guest_messages(key))  # 2
    guest.post_json(guest_messages(key), {"content": "hi"})  # 3
    guest.get(guest_messages(str(uuid.uuid4())))  # 4: an unknown key counts too
    last = guest.get(guest_messages(key))  # 5
    assert last.status_code == 200
    assert_rate_headers(last, limit=5, left=0)
    assert last.wsgi_request.rate_limit_scope == "guest_ip"

    for refused in (guest.get(guest_messages(key)), guest.generic("POST", GUEST_CREATE)):
        assert refused.wsgi_request.rate_limit_scope == "guest_ip"
        assert_429(refused, limit=5)


def test_guest_errors_carry_the_headers(db):
    guest = ApiClient()
    key = new_guest_key(guest)
    answers = {
        400: guest.get(guest_messages(key), {"last_message_id": "x"}),
        404: guest.get(guest_messages(str(uuid.uuid4()))),
        405: guest.delete(guest_messages(key)),
        415: guest.post(guest_messages(key), "hi", content_type="text/plain"),
    }
    assert {status: r.status_code for status, r in answers.items()} == {s: s for s in answers}
    for response in answers.values():
        assert all(header in response for header in RATE_HEADERS)
        assert "Retry-After" not in response


def test_staff_replies_spend_the_staff_members_tier_not_the_guest_limits(as_staff, limits):
    limits(user__free="2/hour", guest_ip="1/minute")
    key = new_guest_key(ApiClient(REMOTE_ADDR="198.51.100.9"))
    replies = [as_staff.post_json(f"/api/v1/chat/guest/{key}/replies", {"content": "hi"}) for _ in range(3)]
    assert [r.status_code for r in replies] == [201, 201, 429]
    assert {r.wsgi_request.rate_limit_scope for r in replies} == {"user:free"}
    assert replies[-1]["X-RateLimit-Limit"] == "2"
