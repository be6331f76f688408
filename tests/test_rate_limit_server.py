"""The limiter against real processes: gunicorn workers sharing Redis, and a Redis that goes away."""

import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.db import connection
from django.test import override_settings

from chat import throttles
from tests.conftest import ApiClient, skip_or_fail

SESSIONS = "/api/chat/sessions"
BASE_DIR = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def call(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, headers, body) of one request on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict]:
    status, headers, _ = call(port, "GET", path, headers)
    return status, headers


def outside_a_window_edge(period: int, margin: float = 5.0) -> None:
    """Wait until the fixed window of `period` seconds has `margin` seconds left at least,
    so that a burst is counted in one window."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.05)


def shared_database_url() -> str:
    """The test run's own database, so that the server sees the test's users."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, tmp_path_factory):
    """Three gunicorn workers on a free port, on the test database and the test Redis.

    One server for the module: starting one costs seconds. It runs the project's
    gunicorn.conf.py (picked up from the working directory), as production does.
    """
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "SECRET_KEY": "test-only-secret-key-not-for-production",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }
    env = {key: value for key, value in env.items() if not key.startswith("RATE_LIMIT_")}
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(GUNICORN), "chatsite.wsgi", "-w", "3", "-b", f"127.0.0.1:{port}", "--timeout", "30"],
            cwd=BASE_DIR,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        def answers() -> bool:
            try:
                return get(port, "/not-a-page")[0] == 404  # not a limited endpoint
            except OSError:
                return False

        wait_for(answers, timeout=20, what=f"gunicorn answering (log: {log})")
        yield port
    finally:
        # Quick shutdown: its database connections must close before pytest drops the database.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fire(port: int, count: int, path: str, headers: dict) -> list[tuple[int, dict]]:
    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(lambda _: get(port, path, headers), range(count)))


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
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("needs the redis-server binary on PATH")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)

    def pings() -> bool:
        try:
            return client.ping()
        except redis.RedisError:
            return False

    try:
        wait_for(pings, timeout=10, what="redis-server answering")
        caches = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{port}/0",
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
            }
        }
        with override_settings(CACHES=caches):
            yield process
    finally:
        client.close()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait()


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
