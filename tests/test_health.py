"""/healthz (the process answers) and /readyz (the database and the cache answer)."""

import pytest
from django.db import connection
from django.test import Client, override_settings

from tests.support import DEAD_REDIS, ApiClient


def test_healthz_answers_200_without_touching_the_database(staff, django_assert_num_queries):
    client = Client()
    client.force_login(staff)  # even a login session is not looked up
    with django_assert_num_queries(0):
        response = client.get("/healthz", HTTP_X_REQUEST_ID="probe-1")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["data"] == {"status": "ok"}
    assert body["trace_id"] == "probe-1" == response["X-Request-ID"]


def test_health_endpoints_are_never_rate_limited(db, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": "1/hour"}
    client = ApiClient()
    for _ in range(5):
        for path in ("/healthz", "/readyz"):
            response = client.get(path)
            assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response
    assert client.get("/api/chat/sessions").status_code == 401
    assert client.get("/api/chat/sessions").status_code == 429  # the limit itself is on


def test_readyz_answers_200_when_database_and_cache_answer(anon):
    response = anon.get("/readyz")
    assert response.status_code == 200
    assert response.json()["data"] == {"database": "ok", "cache": "ok"}


def test_health_endpoints_only_allow_get_and_head(anon):
    assert anon.head("/healthz").status_code == 200
    response = anon.post("/healthz")
    assert response.status_code == 405


def test_readyz_is_a_503_envelope_when_the_cache_is_unreachable(anon):
    with override_settings(CACHES=DEAD_REDIS):
        response = anon.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"] == {"code": "SERVICE_UNAVAILABLE", "details": {"database": "ok", "cache": "unavailable"}}
    assert response["Retry-After"] == "5"
    assert "127.0.0.1" not in response.content.decode()  # the reason is logged, not shown


@pytest.mark.postgres  # the embedded SQLite database cannot be unreachable
@pytest.mark.django_db(transaction=True)
def test_readyz_is_a_503_envelope_when_the_database_is_unreachable():
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = "1"
    try:
        response = Client().get("/readyz")
        healthz = Client().get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    assert response.json()["error"]["details"] == {"database": "unavailable", "cache": "ok"}
    assert healthz.status_code == 200  # liveness does not depend on the database


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_other_methods_get_the_405_envelope(anon, path):
    response = anon.post(path)
    assert response.status_code == 405
    assert response.json()["error"] == {"code": "METHOD_NOT_ALLOWED", "details": None}
    assert response["Allow"] == "GET, HEAD"
