"""/healthz (the process answers) and /readyz (the database and the cache answer)."""

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client, override_settings

from tests.support import (
    DEAD_REDIS,
    ApiClient,
    call,
    poll_until,
    server_env,
    shared_database_url,
    start_gunicorn,
    start_tcp_proxy,
)


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


THREADS = 4


def healthz_at_once(port: int) -> bool:
    try:
        status, _, body = call(port, "GET", "/healthz", timeout=1)
    except TimeoutError:
        return False
    return status == 200 and json.loads(body)["data"] == {"status": "ok"}


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_healthz_answers_at_once_while_a_hung_database_holds_every_thread(tmp_path):
    """The project's gunicorn (one worker, 4 threads) on a database that stops answering mid-run.

    Connections are kept and their bytes acknowledged, nothing comes back: every thread
    waits in a query (or a connect: DB_CONNECT_TIMEOUT is raised so those wait too).
    """
    settings_dict = connection.settings_dict
    with start_tcp_proxy(int(settings_dict["PORT"] or 5432)) as proxy:
        env = server_env(
            DATABASE_URL=shared_database_url({**settings_dict, "HOST": "127.0.0.1", "PORT": proxy.port}),
            REDIS_URL=None,  # the in-process cache: only the database hangs
            RATE_LIMIT_ENABLED="false",
            DB_CONNECT_TIMEOUT="120",
            GUNICORN_WORKERS="1",
            GUNICORN_THREADS=str(THREADS),
        )
        with (
            start_gunicorn(["-c", "gunicorn.conf.py", "chatsite.wsgi"], env=env, log=tmp_path / "g.log") as server,
            ThreadPoolExecutor(max_workers=2 * THREADS) as pool,
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as half_probe,
        ):
            assert call(server.port, "GET", "/readyz")[0] == 200  # through the proxy, while it forwards
            proxy.hang()
            try:
                # A token is looked up in the database: each of these holds a thread.
                held = [
                    pool.submit(call, server.port, "GET", "/api/chat/sessions", {"Authorization": "Token nope"})
                    for _ in range(2 * THREADS)
                ]
                poll_until(lambda: proxy.held() >= THREADS, timeout=30, what="every thread waiting on the database")
                with pytest.raises(TimeoutError):  # the pool is full: a plain request waits its turn
                    call(server.port, "GET", "/not-a-page", timeout=1)
                # A probe that sends half its head cannot hold the probe's own thread.
                half_probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

                poll_until(lambda: healthz_at_once(server.port), timeout=10, what="/healthz answering within 1 s")
            finally:
                proxy.resume()
            assert [future.result(timeout=60)[0] for future in held] == [401] * (2 * THREADS)
