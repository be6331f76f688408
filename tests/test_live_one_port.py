"""The embedded default on one port (`make run`): uvicorn serving chatsite.asgi on SQLite, no Redis.

Writes and waiters share the process: the in-process hub wakes the waiters.
Django's pages still render with their static files. SIGTERM ends streams
cleanly and answers long-polls.
"""

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import BASE_DIR, BIN, EventStream, call, poll_until, server_env, start_uvicorn

pytestmark = pytest.mark.server

GUEST = "/api/v1/chat/guest"


def embedded_env(tmp_path) -> dict:
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DEBUG="true", LIVE_HEARTBEAT_SECONDS="1")
    env.pop("REDIS_URL", None)
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
    )
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("one-port")
    with start_uvicorn(env=embedded_env(tmp_path), log=tmp_path / "uvicorn.log") as started:
        yield started


def new_session(port: int) -> str:
    status, _, body = call(port, "POST", f"{GUEST}/sessions")
    assert status == 201, body
    return json.loads(body)["data"]["session_key"]


def send(port: int, key: str, content: str) -> dict:
    body = json.dumps({"content": content}).encode()
    status, _, answer = call(port, "POST", f"{GUEST}/{key}/messages", {"Content-Type": "application/json"}, body)
    assert status == 201, answer
    return json.loads(answer)["data"]


def test_a_send_wakes_a_stream_and_a_long_poll_on_the_same_port(server):
    key = new_session(server.port)
    stream = EventStream(server.port, f"{GUEST}/{key}/events")
    assert stream.status == 200
    with ThreadPoolExecutor(1) as pool:
        polled = pool.submit(call, server.port, "GET", f"{GUEST}/{key}/messages?wait=20")
        time.sleep(0.3)  # the long-poll reads nothing and waits: not observable from outside
        sent = send(server.port, key, "hello")
        assert stream.messages(1, timeout=3) == [sent]
        status, _, body = polled.result(timeout=5)
    assert status == 200 and json.loads(body)["data"] == [sent]
    # Idle: keep-alive comments, nothing repeated.
    with pytest.raises(TimeoutError):
        stream.next(timeout=1.5)
    assert stream.comments >= 1
    stream.close()


def test_the_fourth_stream_of_a_key_gets_a_429_in_process(server):
    key = new_session(server.port)
    streams = [EventStream(server.port, f"{GUEST}/{key}/events") for _ in range(3)]
    refused = EventStream(server.port, f"{GUEST}/{key}/events")
    assert [s.status for s in streams] == [200, 200, 200]
    assert refused.status == 429
    assert json.loads(refused.body())["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    for stream in streams:
        stream.close()


def test_django_pages_and_their_static_files_are_served_on_the_same_port(server):
    assert call(server.port, "GET", "/healthz")[0] == 200
    status, _, page = call(server.port, "GET", "/admin/login/")
    assert status == 200 and b"/static/admin/css/base.css" in page
    assert call(server.port, "GET", "/static/admin/css/base.css")[0] == 200
    assert call(server.port, "GET", "/api/docs/")[0] == 200
    # A poll without `wait` is Django's, as before.
    key = new_session(server.port)
    status, headers, _ = call(server.port, "GET", f"{GUEST}/{key}/messages")
    assert status == 200 and headers["x-ratelimit-limit"] == "60"


def test_sigterm_ends_streams_cleanly_and_answers_long_polls(tmp_path):
    with start_uvicorn(env=embedded_env(tmp_path), log=tmp_path / "uvicorn.log") as started:
        key = new_session(started.port)
        sent = send(started.port, key, "before shutdown")
        stream = EventStream(started.port, f"{GUEST}/{key}/events")
        assert stream.messages(1) == [sent]
        with ThreadPoolExecutor(1) as pool:
            polled = pool.submit(
                call, started.port, "GET", f"{GUEST}/{key}/messages?last_message_id={sent['id']}&wait=25"
            )
            time.sleep(0.3)
            began = time.monotonic()
            started.process.send_signal(signal.SIGTERM)
            assert stream.next(timeout=5) is None  # the end of the chunked body: a clean end, not a reset
            status, _, body = polled.result(timeout=5)
        assert status == 200 and json.loads(body)["data"] == []
        poll_until(lambda: started.process.poll() is not None, timeout=10, what="uvicorn exiting")
        assert time.monotonic() - began < 5
        # uvicorn re-raises the signal once it has shut down gracefully (its log says so).
        assert started.process.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in started.log.read_text()
        stream.close()


def test_an_unknown_live_path_method_is_a_405_envelope(server):
    key = new_session(server.port)
    status, headers, body = call(server.port, "POST", f"{GUEST}/{key}/events")
    assert status == 405 and json.loads(body)["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert headers["allow"] == "GET"
