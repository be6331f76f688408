"""The limiter against real processes: gunicorn workers sharing Redis, and a Redis that goes away."""

import json
import logging
import os
import signal
import time
from collections import Counter

import pytest
from django.db import connection
from django.test import override_settings

from chat import throttles
from tests.support import (
    ApiClient,
    call,
    fire,
    outside_a_window_edge,
    shared_database_url,
    start_gunicorn,
    start_redis,
)

SESSIONS = "/api/chat/sessions"


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, tmp_path_factory):
    """Three gunicorn workers on a free port, on the test database and the test Redis.

    One server for the module: starting one costs seconds. It runs the project's
    gunicorn.conf.py (picked up from the working directory), as production does.
    """
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(connection.settings_dict),
        "REDIS_URL": os.environ["REDIS_URL"],
        "SECRET_KEY": "test-only-secret-key-not-for-production",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }
    env = {key: value for key, value in env.items() if not key.startswith("RATE_LIMIT_")}
    args = ["chatsite.wsgi", "-w", "3", "--timeout", "30"]
    # /not-a-page: not a limited endpoint, so waiting for it spends no budget.
    with start_gunicorn(
        args, env=env, log=tmp_path / "gunicorn.log", ready_path="/not-a-page", ready_status=404
    ) as server:
        yield server.port


@pytest.mark.server
@pytest.mark.redis
@pytest.mark.postgres  # the server needs a database it can share: the test's SQLite one is in memory
@pytest.mark.django_db(transaction=True)
def test_three_workers_together_admit_exactly_the_free_tier_limit(gunicorn, alice):
    outside_a_window_edge(3600)
    answers = fire(gunicorn, 150, SESSIONS, {"Authorization": f"Token {alice.api_token}"})

    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 100, 429: 50}
    # Each admitted request saw its own count: 99 down to 0, none twice.
    assert sorted(int(h["X-RateLimit-Remaining"]) for status, h in answers if status == 200) == list(range(100))
    assert {h["X-RateLimit-Remaining"] for status, h in answers if status == 429} == {"0"}
    assert all(int(h["Retry-After"]) >= 1 for status, h in answers if status == 429)


@pytest.mark.server
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_workers_together_admit_exactly_the_guest_poll_limit(gunicorn):
    status, _, body = call(gunicorn, "POST", "/api/v1/chat/guest/sessions")
    assert status == 201
    key = json.loads(body)["data"]["session_key"]

    outside_a_window_edge(60)
    answers = fire(gunicorn, 90, f"/api/v1/chat/guest/{key}/messages", {})

    assert Counter(status for status, _ in answers) == {200: 60, 429: 30}
    assert sorted(int(h["X-RateLimit-Remaining"]) for status, h in answers if status == 200) == list(range(60))
    assert {h["X-RateLimit-Limit"] for _, h in answers} == {"60"}


# A Redis of the test's own, which the test can kill.


@pytest.fixture
def own_redis():
    with start_redis() as server:
        caches = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": server.url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
            }
        }
        with override_settings(CACHES=caches):
            yield server.process


@pytest.fixture
def limiter_failures(monkeypatch):
    """A fresh once-a-minute log, and every limiter_failed signal the test causes."""
    monkeypatch.setattr(throttles, "failures", throttles.FailureLog())
    sent = []

    def receiver(sender, error, fail_open, **kwargs):
        sent.append((sender.__name__, type(error).__name__, fail_open))

    throttles.limiter_failed.connect(receiver)
    yield sent
    throttles.limiter_failed.disconnect(receiver)


def limiter_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "chat.throttles" and r.levelno == logging.ERROR]


def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_a_dead_redis_fails_open_served_logged_once_and_signalled(own_redis, alice, limiter_failures, caplog):
    client = ApiClient(alice.api_token)
    counted = client.get(SESSIONS)
    assert counted.status_code == 200 and counted["X-RateLimit-Remaining"] == "99"

    own_redis.kill()
    own_redis.wait()
    with caplog.at_level(logging.ERROR, logger="chat.throttles"):
        answers, elapsed = timed(lambda: [client.get(SESSIONS) for _ in range(3)])
        unauthenticated = ApiClient("0123456789abcdef").get(SESSIONS)

    assert [r.status_code for r in answers] == [200, 200, 200]
    assert not any("X-RateLimit-Limit" in r for r in answers)
    assert elapsed < 2
    assert unauthenticated.status_code == 401  # the anonymous path fails open too
    assert len(limiter_failures) == 4
    assert {fail_open for _, _, fail_open in limiter_failures} == {True}
    assert len(limiter_errors(caplog)) == 1  # once per interval, not once per request
    assert "failing open" in limiter_errors(caplog)[0].getMessage()


def test_a_dead_redis_fails_closed_with_a_503_envelope_when_configured(own_redis, alice, limiter_failures, settings):
    settings.RATE_LIMIT_FAIL_OPEN = False
    client = ApiClient(alice.api_token)
    assert client.get(SESSIONS).status_code == 200

    own_redis.kill()
    own_redis.wait()
    response, elapsed = timed(lambda: client.get(SESSIONS))

    assert response.status_code == 503
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"] == {"code": "SERVICE_UNAVAILABLE", "details": None}
    assert response["Retry-After"]
    assert "redis" not in response.content.decode().lower()
    assert elapsed < 2
    assert limiter_failures == [("ChatSessionListApi", "ConnectionError", False)]


def test_a_hung_redis_costs_a_request_its_socket_timeout_not_a_hang(own_redis, alice, limiter_failures):
    client = ApiClient(alice.api_token)
    assert client.get(SESSIONS).status_code == 200  # a pooled connection that will hang

    os.kill(own_redis.pid, signal.SIGSTOP)
    answers, elapsed = timed(lambda: [client.get(SESSIONS) for _ in range(2)])

    assert [r.status_code for r in answers] == [200, 200]
    assert elapsed < 2  # two requests, each at most its 0.2 s timeout (connect, then read)
    assert [error for _, error, _ in limiter_failures] == ["TimeoutError", "TimeoutError"]
