"""The guest limits of API.md, through the real guest URLs."""

import pytest

from chat import throttles
from tests.support import ApiClient, FakeClock, assert_429

CREATE = "/api/v1/chat/guest/sessions"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def steady_clock(monkeypatch):
    """Mid-hour and mid-minute, so that no burst straddles two windows."""
    monkeypatch.setattr(throttles.limiter, "clock", FakeClock("2025-08-07T09:15:30+00:00"))


def create(client, **extra) -> str:
    return client.generic("POST", CREATE, **extra).json()["data"]["session_key"]


def test_a_guest_session_is_polled_60_times_a_minute_then_429():
    guest = ApiClient()
    key = create(guest)
    url = f"/api/v1/chat/guest/{key}/messages"

    answers = [guest.get(url) for _ in range(60)]
    assert {r.status_code for r in answers} == {200}
    assert [r["X-RateLimit-Remaining"] for r in answers] == [str(n) for n in range(59, -1, -1)]
    assert {r.wsgi_request.rate_limit_scope for r in answers} == {"guest_poll"}

    refused = guest.get(url)
    assert_429(refused, limit=60)
    assert refused["Retry-After"] == "30"  # the minute's window ends at 09:16:00

    # The limit is the key's, not the caller's: another session polls on.
    assert guest.get(f"/api/v1/chat/guest/{create(guest)}/messages").status_code == 200


def test_a_guest_sends_30_messages_a_minute_then_429():
    guest = ApiClient()
    url = f"/api/v1/chat/guest/{create(guest)}/messages"
    assert [guest.post_json(url, {"content": f"m{i}"}).status_code for i in range(30)] == [201] * 30
    assert_429(guest.post_json(url, {"content": "one too many"}), limit=30)
    # Sending and polling have budgets of their own.
    assert guest.get(url).status_code == 200


def test_an_ip_creates_10_guest_sessions_an_hour_then_429():
    guest = ApiClient()
    assert [guest.generic("POST", CREATE).status_code for _ in range(10)] == [201] * 10
    assert_429(guest.generic("POST", CREATE), limit=10)
    assert ApiClient(REMOTE_ADDR="198.51.100.7").generic("POST", CREATE).status_code == 201


def test_all_guest_endpoints_of_one_ip_share_the_flood_guard(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "guest_ip": "5/minute"}
    guest = ApiClient()
    key = create(guest)
    url = f"/api/v1/chat/guest/{key}/messages"
    assert [guest.get(url).status_code for _ in range(2)] == [200, 200]
    assert guest.post_json(url, {"content": "hi"}).status_code == 201
    assert guest.get(f"/api/v1/chat/guest/{key}0/messages").status_code == 404  # junk keys count too
    refused = guest.get(url)
    assert_429(refused, limit=5)
    assert refused.wsgi_request.rate_limit_scope == "guest_ip"
