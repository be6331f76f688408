"""/metrics: who may read it, and what it counts.

The multiprocess mode (several gunicorn workers, one answer) is in
tests/test_deploy.py, against a real gunicorn.
"""

import pytest
from django.test import Client, override_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chat import metrics
from tests.support import DEAD_REDIS, ApiClient

METRICS_TOKEN = "metrics-bearer-for-tests-0123456789"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


# Who may read it.


def test_metrics_without_credentials_is_a_401_envelope(anon):
    response = anon.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "UNAUTHENTICATED", "details": None}
    assert response["WWW-Authenticate"] == "Bearer"


def test_metrics_with_an_invalid_token_is_a_401(db):
    response = ApiClient("0" * 40).get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_metrics_for_a_user_who_is_not_staff_is_a_403(as_alice):
    response = as_alice.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"] == {"code": "FORBIDDEN", "details": None}


def test_staff_read_metrics_with_a_token_or_a_login_session(staff):
    assert ApiClient(staff.api_token).get("/metrics").status_code == 200
    assert ApiClient(HTTP_AUTHORIZATION=f"Bearer {staff.api_token}").get("/metrics").status_code == 200
    client = Client()
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200


def test_the_configured_bearer_reads_metrics_and_nothing_else_does(db, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    assert ApiClient(HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").get("/metrics").status_code == 200
    assert ApiClient(HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}x").get("/metrics").status_code == 401
    assert ApiClient(HTTP_AUTHORIZATION=f"Token {METRICS_TOKEN}").get("/metrics").status_code == 401


def test_an_empty_metrics_token_setting_lets_no_bearer_in(db, settings):
    settings.METRICS_TOKEN = ""
    assert ApiClient(HTTP_AUTHORIZATION="Bearer ").get("/metrics").status_code == 401
    assert ApiClient(HTTP_AUTHORIZATION="Bearer").get("/metrics").status_code == 401


# What it counts.


def test_requests_are_counted_and_timed_by_route_pattern_and_status(as_alice, staff):
    route = "api/chat/sessions/<str:session_id>"
    before = sample("chat_http_requests_total", method="DELETE", route=route, status="404")
    timed_before = sample("chat_http_request_duration_seconds_count", method="DELETE", route=route, status="404")

    assert as_alice.delete("/api/chat/sessions/no-such-session-42").status_code == 404

    scraped = scrape(ApiClient(staff.api_token))
    labels = (("method", "DELETE"), ("route", route), ("status", "404"))
    assert scraped[("chat_http_requests_total", labels)] == before + 1
    assert scraped[("chat_http_request_duration_seconds_count", labels)] == timed_before + 1
    assert not any("no-such-session-42" in value for _, sample_labels in scraped for _, value in sample_labels)


def test_a_url_that_matches_nothing_is_counted_without_its_path(anon):
    before = sample("chat_http_requests_total", method="GET", route=metrics.UNMATCHED, status="404")
    assert anon.get("/no/such/page/secret-looking-123").status_code == 404
    assert sample("chat_http_requests_total", method="GET", route=metrics.UNMATCHED, status="404") == before + 1


def test_guest_polls_are_counted_by_outcome_with_the_messages_they_returned():
    empty = sample("chat_guest_polls_total", outcome="empty")
    with_messages = sample("chat_guest_polls_total", outcome="messages")
    returned = sample("chat_guest_poll_messages_total")

    metrics.observe_guest_poll(0)
    metrics.observe_guest_poll(3)
    metrics.observe_guest_poll(2)

    assert sample("chat_guest_polls_total", outcome="empty") == empty + 1
    assert sample("chat_guest_polls_total", outcome="messages") == with_messages + 2
    assert sample("chat_guest_poll_messages_total") == returned + 5


def test_messages_saved_are_counted_by_source():
    before = {source: sample("chat_messages_saved_total", source=source) for source in metrics.SOURCES}
    metrics.observe_messages_saved("api", 3)
    metrics.observe_messages_saved("admin", 1)
    assert sample("chat_messages_saved_total", source="api") == before["api"] + 3
    assert sample("chat_messages_saved_total", source="admin") == before["admin"] + 1
    assert sample("chat_messages_saved_total", source="guest") == before["guest"]
    with pytest.raises(ValueError, match="unknown message source"):
        metrics.observe_messages_saved("email", 1)


def test_requests_refused_by_a_rate_limit_are_counted_by_scope(db, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": "1/hour"}
    before = sample("chat_rate_limited_total", scope="anon")
    client = ApiClient()
    assert client.get("/api/chat/sessions").status_code == 401
    assert client.get("/api/chat/sessions").status_code == 429
    assert client.get("/api/chat/sessions").status_code == 429
    assert sample("chat_rate_limited_total", scope="anon") == before + 2


def test_limiter_failures_are_counted_by_mode(as_alice, settings):
    opened = sample("chat_rate_limiter_failures_total", mode="open")
    closed = sample("chat_rate_limiter_failures_total", mode="closed")
    with override_settings(CACHES=DEAD_REDIS):
        assert as_alice.get("/api/chat/sessions").status_code == 200  # fails open
        settings.RATE_LIMIT_FAIL_OPEN = False
        assert as_alice.get("/api/chat/sessions").status_code == 503
    assert sample("chat_rate_limiter_failures_total", mode="open") == opened + 1
    assert sample("chat_rate_limiter_failures_total", mode="closed") == closed + 1


def test_guest_polls_through_the_real_endpoint_are_counted(db):
    empty = sample("chat_guest_polls_total", outcome="empty")
    with_messages = sample("chat_guest_polls_total", outcome="messages")
    returned = sample("chat_guest_poll_messages_total")
    guest = ApiClient()
    key = guest.post_json("/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    poll = f"/api/v1/chat/guest/{key}/messages"

    assert guest.get(poll).status_code == 200
    guest.post_json(poll, {"content": "one"})
    guest.post_json(poll, {"content": "two"})
    assert len(guest.get(poll).json()["data"]) == 2
    assert guest.get(poll, {"last_message_id": "999999999"}).json()["data"] == []

    assert sample("chat_guest_polls_total", outcome="empty") == empty + 2
    assert sample("chat_guest_polls_total", outcome="messages") == with_messages + 1
    assert sample("chat_guest_poll_messages_total") == returned + 2
