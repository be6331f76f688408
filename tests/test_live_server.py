"""Real-time delivery across real processes: gunicorn writes, the live process (uvicorn) waits.

PostgreSQL and Redis, as production runs them: a message sent through one
server process wakes the waiters held by another, through Redis pub/sub.
"""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client

from chat import wakeups
from chat.models import ChatSession
from tests.support import (
    EventStream,
    call,
    poll_until,
    server_env,
    shared_database_url,
    start_gunicorn,
    start_redis,
    start_uvicorn,
)

pytestmark = [
    pytest.mark.server,
    pytest.mark.redis,
    pytest.mark.postgres,  # the servers share the test's database: SQLite's is in memory
    pytest.mark.django_db(transaction=True),
]

GUEST = "/api/v1/chat/guest"


def live_env(redis_url: str) -> dict:
    return server_env(
        DATABASE_URL=shared_database_url(connection.settings_dict),
        REDIS_URL=redis_url,
        # The racing writers send more than a guest's 30 a minute.
        RATE_LIMIT_GUEST_SEND="10000/minute",
        RATE_LIMIT_GUEST_POLL="10000/minute",
        RATE_LIMIT_GUEST_IP="100000/minute",
        LIVE_HEARTBEAT_SECONDS="2",
    )


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn (2 workers) for the API and one live process, on the test database and the test Redis."""
    tmp_path = tmp_path_factory.mktemp("live")
    with django_db_blocker.unblock():
        env = live_env(os.environ["REDIS_URL"])
    with (
        start_gunicorn(["chatsite.wsgi", "-w", "2"], env=env, log=tmp_path / "gunicorn.log") as wsgi,
        start_uvicorn(env=env, log=tmp_path / "uvicorn.log") as live,
    ):
        yield SimpleNamespace(wsgi=wsgi.port, live=live.port)


def new_session(port: int) -> str:
    status, _, body = call(port, "POST", f"{GUEST}/sessions")
    assert status == 201, body
    return json.loads(body)["data"]["session_key"]


def send(port: int, key: str, content: str) -> dict:
    status, _, body = call(
        port,
        "POST",
        f"{GUEST}/{key}/messages",
        {"Content-Type": "application/json"},
        json.dumps({"content": content}).encode(),
    )
    assert status == 201, body
    return json.loads(body)["data"]


def long_poll(port: int, key: str, after: int, wait: int) -> tuple[int, dict, dict, float]:
    started = time.monotonic()
    status, headers, body = call(port, "GET", f"{GUEST}/{key}/messages?last_message_id={after}&wait={wait}")
    return (
        status,
        {name.lower(): value for name, value in headers.items()},
        json.loads(body),
        time.monotonic() - started,
    )


def test_a_send_through_gunicorn_wakes_a_stream_and_a_long_poll_held_by_the_live_process(servers):
    key = new_session(servers.wsgi)
    stream = EventStream(servers.live, f"{GUEST}/{key}/events")
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["Cache-Control"] == "no-store"
    assert stream.headers["X-Accel-Buffering"] == "no"
    assert stream.headers["X-Request-ID"]
    assert stream.headers["X-RateLimit-Limit"] == "10000"

    with ThreadPoolExecutor(1) as pool:
        polled = pool.submit(long_poll, servers.live, key, 0, 20)
        time.sleep(0.5)  # the long-poll reads nothing and waits: not observable from outside
        sent = send(servers.wsgi, key, "hello")
        [event] = stream.messages(1, timeout=3)
        status, headers, body, seconds = polled.result(timeout=5)

    assert event == sent
    assert status == 200 and body["data"] == [sent]
    assert body["meta"] == {"last_message_id": sent["id"], "has_more": False}
    assert body["trace_id"] == headers["x-request-id"]
    assert seconds < 5  # woken, not timed out
    stream.close()


def test_a_long_poll_with_nothing_new_answers_empty_after_its_wait(servers):
    key = new_session(servers.wsgi)
    status, headers, body, seconds = long_poll(servers.live, key, 0, 1)
    assert status == 200
    assert body["data"] == [] and body["meta"] == {"last_message_id": 0, "has_more": False}
    assert 1 <= seconds < 3
    assert headers["x-ratelimit-remaining"] == "9999"  # one poll


def test_six_racing_writers_and_a_streaming_reader_see_every_id_once_in_order(servers):
    key = new_session(servers.wsgi)
    stream = EventStream(servers.live, f"{GUEST}/{key}/events")

    def writer(n: int) -> list[int]:
        return [send(servers.wsgi, key, f"writer {n}, message {i}")["id"] for i in range(10)]

    with ThreadPoolExecutor(6) as pool:
        sent = sorted(message_id for ids in pool.map(writer, range(6)) for message_id in ids)
    received = [message["id"] for message in stream.messages(60, timeout=15)]

    assert received == sent
    assert len(set(received)) == 60
    # Nothing more: the next thing on the stream is a keep-alive comment, not a repeat.
    with pytest.raises(TimeoutError):
        stream.next(timeout=2.5)
    assert stream.comments >= 1
    stream.close()


def test_a_stream_resumed_with_last_event_id_loses_and_repeats_nothing(servers):
    key = new_session(servers.wsgi)
    first = [send(servers.wsgi, key, f"m{i}") for i in range(5)]
    stream = EventStream(servers.live, f"{GUEST}/{key}/events")
    seen = stream.messages(3)
    stream.close()
    later = [send(servers.wsgi, key, f"m{i}") for i in range(5, 7)]

    # Last-Event-ID wins over last_message_id (what EventSource sends when it reconnects).
    resumed = EventStream(
        servers.live, f"{GUEST}/{key}/events?last_message_id=0", {"Last-Event-ID": str(seen[-1]["id"])}
    )
    rest = resumed.messages(4)
    resumed.close()

    assert seen + rest == first + later


def test_a_bad_cursor_or_an_unknown_key_is_an_envelope_before_the_stream(servers):
    key = new_session(servers.wsgi)
    bad = EventStream(servers.live, f"{GUEST}/{key}/events", {"Last-Event-ID": "12x", "X-Request-ID": "trace-1"})
    body = json.loads(bad.body())
    assert bad.status == 400 and bad.headers["Content-Type"] == "application/json"
    assert body["error"] == {
        "code": "VALIDATION_ERROR",
        "details": {"Last-Event-ID": [body["error"]["details"]["Last-Event-ID"][0]]},
    }
    assert body["trace_id"] == bad.headers["X-Request-ID"] == "trace-1"
    assert bad.headers["X-RateLimit-Limit"] == "10000"

    unknown = EventStream(servers.live, f"{GUEST}/00000000-0000-4000-8000-000000000000/events")
    assert unknown.status == 404 and json.loads(unknown.body())["error"]["code"] == "NOT_FOUND"

    status, _, body = call(servers.live, "GET", f"{GUEST}/{key}/messages?wait=31")
    assert status == 400 and json.loads(body)["error"]["details"]["wait"]


def test_the_fourth_stream_of_a_key_gets_a_429_and_a_closed_one_frees_its_slot(servers):
    key = new_session(servers.wsgi)
    streams = [EventStream(servers.live, f"{GUEST}/{key}/events") for _ in range(3)]
    assert [stream.status for stream in streams] == [200, 200, 200]

    refused = EventStream(servers.live, f"{GUEST}/{key}/events")
    body = json.loads(refused.body())
    assert refused.status == 429
    assert body["error"] == {
        "code": "RATE_LIMIT_EXCEEDED",
        "details": {"retry_after": int(refused.headers["Retry-After"])},
    }
    assert refused.headers["X-Request-ID"] == body["trace_id"]

    streams.pop().close()

    def a_fourth_opens():
        stream = EventStream(servers.live, f"{GUEST}/{key}/events")
        if stream.status == 200:
            streams.append(stream)
            return True
        stream.close()
        return False

    poll_until(a_fourth_opens, timeout=5, what="a stream slot freed by a closed stream")
    for stream in streams:
        stream.close()


@pytest.fixture
def servers_on_own_redis(django_db_setup, tmp_path):
    """The same two servers on a Redis of the test's own, which the test kills."""
    with start_redis() as redis_server:
        env = live_env(redis_server.url)
        with (
            start_gunicorn(["chatsite.wsgi", "-w", "1"], env=env, log=tmp_path / "gunicorn.log") as wsgi,
            start_uvicorn(env=env, log=tmp_path / "uvicorn.log") as live,
        ):
            yield SimpleNamespace(wsgi=wsgi.port, live=live.port, redis=redis_server, live_log=live.log)


@pytest.mark.parametrize("outage", ["killed", "hung"])
def test_with_redis_gone_mid_stream_messages_still_arrive_within_seconds(servers_on_own_redis, outage):
    servers = servers_on_own_redis
    key = new_session(servers.wsgi)
    stream = EventStream(servers.live, f"{GUEST}/{key}/events")
    before = send(servers.wsgi, key, "before")
    assert stream.messages(1, timeout=3) == [before]

    if outage == "killed":
        servers.redis.process.kill()
        servers.redis.process.wait()
    else:  # paused: connections stay open and nothing answers (start_redis resumes it to stop it)
        os.kill(servers.redis.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    after = send(servers.wsgi, key, "after")  # the limiter fails open; the wake-up is lost
    assert stream.messages(1, timeout=5) == [after]
    assert time.monotonic() - started < 5

    with ThreadPoolExecutor(1) as pool:
        polled = pool.submit(long_poll, servers.live, key, after["id"], 20)
        time.sleep(0.5)
        last = send(servers.wsgi, key, "while down")
        status, _, body, seconds = polled.result(timeout=10)
    assert status == 200 and body["data"] == [last] and seconds < 5
    assert stream.messages(1, timeout=5) == [last]
    stream.close()
    log = servers.live_log.read_text()
    assert "wake-up channel lost" in log


def test_the_staff_inbox_stream_sends_the_row_of_each_session_that_gets_a_message(servers, staff):
    inbox = EventStream(servers.live, "/api/v1/chat/guest/inbox/events", {"Authorization": f"Bearer {staff.api_token}"})
    assert inbox.status == 200 and inbox.headers["Content-Type"].startswith("text/event-stream")
    key = new_session(servers.wsgi)
    sent = send(servers.wsgi, key, "is anyone there?")

    event = inbox.next(timeout=3)
    row = json.loads(event["data"])
    assert event["event"] == "session" and "id" not in event  # no resume ids: a reconnect re-reads the inbox
    assert row["session_key"] == key and row["last_message_id"] == sent["id"]
    assert row["awaiting_reply"] is True and row["last_role"] == "user" and row["message_count"] == 1

    body = json.dumps({"content": "yes"}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Token {staff.api_token}"}
    assert call(servers.wsgi, "POST", f"{GUEST}/{key}/replies", headers, body)[0] == 201
    row = json.loads(inbox.next(timeout=3)["data"])
    assert row["session_key"] == key and row["awaiting_reply"] is False and row["message_count"] == 2
    inbox.close()


def test_the_inbox_stream_takes_the_admin_login_cookie_and_refuses_everyone_else(servers, staff, alice):
    browser = Client()
    browser.force_login(staff)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    by_cookie = EventStream(servers.live, "/api/v1/chat/guest/inbox/events", {"Cookie": cookie})
    assert by_cookie.status == 200
    by_cookie.close()

    path = "/api/v1/chat/guest/inbox/events"
    nobody = EventStream(servers.live, path)
    assert nobody.status == 401 and json.loads(nobody.body())["error"]["code"] == "UNAUTHENTICATED"
    bad = EventStream(servers.live, path, {"Authorization": "Bearer nottherightkey"})
    assert bad.status == 401
    not_staff = EventStream(servers.live, path, {"Authorization": f"Token {alice.api_token}"})
    assert not_staff.status == 403 and json.loads(not_staff.body())["error"]["code"] == "FORBIDDEN"
    assert not_staff.headers["X-RateLimit-Limit"] == "100"  # alice's free tier, counted before the 403


def test_a_stream_whose_session_is_purged_ends_cleanly_and_a_reconnect_gets_404(servers):
    key = new_session(servers.wsgi)
    stream = EventStream(servers.live, f"{GUEST}/{key}/events")
    assert stream.status == 200
    ChatSession.objects.filter(session_key=key).delete()  # as purge_guest_sessions does
    wakeups.publish(key)  # a write to it would have woken it; nothing writes to a purged session

    assert stream.next(timeout=5) is None  # the end of the chunked body: a clean end
    again = EventStream(servers.live, f"{GUEST}/{key}/events")
    assert again.status == 404 and json.loads(again.body())["error"]["code"] == "NOT_FOUND"
