"""Real-time delivery in one process: `wait` on the WSGI app, wake-ups after commit, the hub, the limits, SSE."""

import asyncio
import json
import logging
import time

import pytest
import redis
from django.conf import settings
from django.db import transaction

from chat import metrics, services, wakeups
from chat.live import slots as slots_module
from chat.live.app import handles
from chat.live.http import sse_event
from chat.live.hub import Hub
from chat.live.slots import LocalSlots, RedisSlots
from tests.support import ApiClient

GUEST = "/api/v1/chat/guest"


@pytest.fixture
def guest_key(db) -> str:
    return str(services.guest_session_create().session_key)


# `wait` on the WSGI app: validated as the contract says, never held.


@pytest.mark.parametrize("wait", ["31", "-1", "1.5", "abc", "٣", "", "100"])
def test_a_bad_wait_is_a_400_naming_it(guest_key, wait):
    response = ApiClient().get(f"{GUEST}/{guest_key}/messages", {"wait": wait})
    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == ["wait"]


def test_a_long_poll_that_reaches_the_wsgi_app_is_answered_at_once_counted_and_logged(guest_key, caplog):
    before = metrics.live_wait_unrouted._value.get()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="chat.api.guest"):
        response = ApiClient().get(f"{GUEST}/{guest_key}/messages", {"wait": "30"})
    assert response.status_code == 200 and response.json()["data"] == []
    assert time.monotonic() - started < 1
    assert metrics.live_wait_unrouted._value.get() == before + 1
    assert ApiClient().get(f"{GUEST}/{guest_key}/messages", {"wait": "0"}).status_code == 200
    assert metrics.live_wait_unrouted._value.get() == before + 1  # wait=0 is a plain poll


# Routing on one port.


@pytest.mark.parametrize(
    ("method", "path", "query", "live"),
    [
        ("GET", f"{GUEST}/k/events", b"", True),
        ("GET", f"{GUEST}/inbox/events", b"", True),
        ("GET", f"{GUEST}/inbox", b"wait=5", False),  # the inbox list is Django's
        ("POST", f"{GUEST}/k/events", b"", True),  # the live app's 405
        ("GET", f"{GUEST}/k/messages", b"wait=5", True),
        ("GET", f"{GUEST}/k/messages", b"last_message_id=3&wait=", True),  # the live app's 400
        ("GET", f"{GUEST}/k/messages", b"last_message_id=3", False),
        ("GET", f"{GUEST}/k/messages", b"waiting=1", False),
        ("POST", f"{GUEST}/k/messages", b"wait=5", False),
        ("OPTIONS", f"{GUEST}/k/messages", b"wait=5", False),  # preflights: Django's CORS
        ("GET", "/api/chat/messages", b"wait=5", False),
        ("GET", "/healthz", b"", False),
    ],
)
def test_only_the_waiting_requests_go_to_the_live_app(method, path, query, live):
    assert handles({"method": method, "path": path, "query_string": query}) is live


# Wake-ups: after commit, one per write, only for guest sessions.


@pytest.fixture
def wakeups_seen(settings):
    """The keys of the wake-ups published while the test runs (through Redis or the in-process hub)."""
    if not wakeups.uses_redis():
        seen: list[str] = []
        unsubscribe = wakeups.LOCAL_HUB.subscribe(seen.append)
        yield lambda: seen
        unsubscribe()
        return
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    pubsub = client.pubsub()
    pubsub.subscribe(settings.WAKEUP_CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # subscribed before anything is published
    received: list[str] = []

    def seen() -> list[str]:
        while (message := pubsub.get_message(timeout=0.3)) is not None:
            received.append(message["data"].decode())
        return received

    yield seen
    pubsub.close()
    client.close()


@pytest.mark.django_db(transaction=True)
def test_a_guest_write_wakes_its_session_once_after_commit_and_a_rollback_wakes_nobody(wakeups_seen, staff):
    key = services.guest_session_create().session_key
    with transaction.atomic():
        services.guest_message_send(session_key=key, content="hello")
        assert wakeups_seen() == []  # not before the commit
    assert wakeups_seen() == [str(key)]

    with pytest.raises(RuntimeError), transaction.atomic():
        services.guest_reply_send(session_key=key, staff_user=staff, content="never")
        raise RuntimeError("rolled back")
    services.guest_reply_send(session_key=key, staff_user=staff, content="a reply")
    assert wakeups_seen() == [str(key), str(key)]


@pytest.mark.django_db(transaction=True)
def test_a_staff_delete_of_a_guest_message_wakes_its_session_for_the_inbox(wakeups_seen):
    key = services.guest_session_create().session_key
    message = services.guest_message_send(session_key=key, content="oops")
    assert services.messages_delete_by_staff(message_pks=[message.pk]) == 1
    assert wakeups_seen() == [str(key), str(key)]


@pytest.mark.django_db(transaction=True)
def test_a_users_own_session_wakes_nobody(wakeups_seen, alice):
    services.messages_save(user=alice, session_id="s1", messages=[{"role": "user", "content": "hi"}])
    assert wakeups_seen() == []


def test_the_channel_name_carries_the_prefix_and_the_redis_database():
    assert settings.WAKEUP_CHANNEL.startswith(f"{settings.CACHE_KEY_PREFIX}:")
    assert settings.WAKEUP_CHANNEL.endswith(":wakeups")


def test_a_failing_local_listener_does_not_stop_the_others():
    hub = wakeups.LocalHub()
    seen = []
    hub.subscribe(lambda key: 1 / 0)
    unsubscribe = hub.subscribe(seen.append)
    hub.publish("k")
    unsubscribe()
    hub.publish("k2")
    assert seen == ["k"]


# The hub.


def test_the_hub_wakes_the_waiters_of_a_key_and_the_watchers_of_all():
    async def scenario():
        hub = Hub()
        watched = []
        with hub.waiting("a") as a, hub.waiting("b") as b, hub.watching(watched.append):
            hub.notify("a")
            assert a.is_set() and not b.is_set()
            assert watched == ["a"]
            hub.close()
            assert b.is_set()
            with hub.waiting("c") as c:
                assert c.is_set()  # closing: a new waiter does not wait
        assert hub.waiting_sessions == 0 and not hub.watched

    asyncio.run(scenario())


# Open-stream limits.


def test_local_slots_count_per_key_and_per_ip(settings):
    settings.LIVE_STREAMS_PER_KEY, settings.LIVE_STREAMS_PER_IP = 3, 4
    local = LocalSlots()
    assert [local.acquire(f"s{i}", "k1", "ip") for i in range(4)] == [0, 0, 0, 1]
    assert local.acquire("s4", "k2", "ip") == 0
    assert local.acquire("s5", "k3", "ip") == 2
    local.release("s0", "k1", "ip")
    assert local.acquire("s6", "k3", "ip") == 0


@pytest.mark.redis
def test_redis_slots_expire_when_their_process_dies(settings, monkeypatch):
    settings.LIVE_STREAMS_PER_KEY, settings.LIVE_STREAMS_PER_IP = 3, 30
    store = RedisSlots()
    now = time.time()
    monkeypatch.setattr(slots_module.time, "time", lambda: now)
    assert [store.acquire(f"s{i}", "k1", "10.0.0.1") for i in range(4)] == [0, 0, 0, 1]
    store.release("s0", "k1", "10.0.0.1")
    assert store.acquire("s3", "k1", "10.0.0.1") == 0
    # Their process died: no refresh, no release. After the TTL they no longer count.
    monkeypatch.setattr(slots_module.time, "time", lambda: now + slots_module.TTL + 1)
    assert [store.acquire(f"t{i}", "k1", "10.0.0.1") for i in range(4)] == [0, 0, 0, 1]
    # A refreshed stream outlives the TTL; the others do not.
    monkeypatch.setattr(slots_module.time, "time", lambda: now + slots_module.TTL + 30)
    store.refresh([("t0", "k1", "10.0.0.1")])
    monkeypatch.setattr(slots_module.time, "time", lambda: now + 2 * slots_module.TTL + 2)
    assert [store.acquire(f"u{i}", "k1", "10.0.0.1") for i in range(3)] == [0, 0, 1]


# The event format.


def test_an_event_is_an_id_a_name_and_one_line_of_json():
    event = sse_event("message", {"id": 7, "content": "two\nlines"}, 7)
    assert event == b'id: 7\nevent: message\ndata: {"id":7,"content":"two\\nlines"}\n\n'
    assert json.loads(event.split(b"data: ")[1]) == {"id": 7, "content": "two\nlines"}
