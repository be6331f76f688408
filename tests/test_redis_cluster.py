"""The limiter on a real Redis Cluster (3 primaries, 3 replicas) started for this module.

REDIS_URL=redis+cluster://HOST:PORT (chat.redis_cluster). A script may only touch
keys of one slot: one caller's counters share a hash tag, and a request that
spends two callers' budgets sends one script per slot in one pipeline.
"""

import json
import subprocess
from collections import Counter

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection

from bench.scale.procs import RedisClusterProcs, Unavailable
from chat import redis_cluster, throttles
from chat.throttles import RedisCounter
from tests.support import (
    ApiClient,
    EventStream,
    call,
    outside_a_window_edge,
    poll_until,
    server_env,
    shared_database_url,
    skip_or_fail,
    start_gunicorn,
    start_uvicorn,
)

SESSIONS = "/api/chat/sessions"
GUEST_SESSIONS = "/api/v1/chat/guest/sessions"

pytestmark = pytest.mark.redis


def start_cluster() -> RedisClusterProcs:
    try:
        return RedisClusterProcs().start()
    except Unavailable as error:
        skip_or_fail(str(error))


def cluster_caches(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "cluster-test",
            "OPTIONS": {
                "CONNECTION_FACTORY": "chat.redis_cluster.ClusterConnectionFactory",
                "SOCKET_CONNECT_TIMEOUT": 0.25,
                "SOCKET_TIMEOUT": 0.25,
            },
        }
    }


@pytest.fixture(scope="module")
def cluster():
    procs = start_cluster()
    yield procs
    procs.stop()


@pytest.fixture
def on_cluster(cluster):
    with override_settings(CACHES=cluster_caches(cluster.url)):
        caches["default"].clear()  # every primary: a cluster's FLUSHDB goes to all of them
        yield cluster


@pytest.fixture
def sends(monkeypatch):
    """The packed commands written to Redis, as (port, command) pairs, while the test runs."""
    sent = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append((self.port, command))
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def test_the_cluster_url_gives_a_cluster_client_and_exact_counts_across_slots(on_cluster):
    client = throttles.get_redis_connection("default")
    assert isinstance(client, RedisCluster)
    counter = RedisCounter("default")
    keys = [("rl:a:{alice}:60:0", 60), ("rl:b:{alice}:60:0", 60), ("rl:c:{10.0.0.1}:60:0", 60)]
    assert len({client.keyslot(caches["default"].make_key(key)) for key, _ in keys}) == 2

    for expected in range(1, 6):
        assert counter.incr_many(keys) == [expected] * 3
    assert counter.incr_many(keys[2:]) == [6]
    assert 55 < caches["default"].ttl("rl:c:{10.0.0.1}:60:0") <= 60


def test_one_callers_counters_share_a_slot_and_two_callers_cost_one_round_trip_per_node(on_cluster, sends):
    client = throttles.get_redis_connection("default")
    ip_limits = throttles.limits_for_identity(throttles.IP, "10.1.2.3")
    assert len(ip_limits) >= 2  # anonymous callers, guest creation, the flood guard
    slots = {client.keyslot(caches["default"].make_key(limit.key(0))) for limit in ip_limits}
    assert len(slots) == 1

    RedisCounter("default").incr_many([("rl:warm:{x}:1:0", 5)])  # connections and the slot table first
    sends.clear()
    throttles.limiter.hit(ip_limits)
    assert len(sends) == 1  # every counter of one caller: one script, one round trip

    sends.clear()
    two_callers = [*ip_limits, *throttles.limits_for_identity(throttles.SESSION_KEY, "guest-key-1")]
    throttles.limiter.hit(two_callers)
    per_node = Counter(port for port, _ in sends)
    assert set(per_node.values()) == {1}  # at most one round trip per node
    assert sum(per_node.values()) <= 2


def test_guest_create_and_poll_keep_their_limits_exactly(on_cluster, db, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "guest_create": "3/hour", "guest_poll": "4/minute"}
    guest = ApiClient()
    outside_a_window_edge(60, margin=3)
    created = [guest.post_json(GUEST_SESSIONS, {}) for _ in range(4)]
    assert [r.status_code for r in created] == [201, 201, 201, 429]
    key = created[0].json()["data"]["session_key"]

    polls = [guest.get(f"/api/v1/chat/guest/{key}/messages") for _ in range(6)]
    assert [r.status_code for r in polls] == [200, 200, 200, 200, 429, 429]
    assert [r["X-RateLimit-Remaining"] for r in polls] == ["3", "2", "1", "0", "0", "0"]


def test_reset_rate_limit_reads_and_deletes_one_callers_counters_on_the_cluster(on_cluster, alice):
    client = ApiClient(alice.api_token)
    assert client.get(SESSIONS)["X-RateLimit-Remaining"] == "99"
    keys = throttles.limiter.current_keys(throttles.limits_for_user(alice))
    assert caches["default"].get_many(keys)  # one hash tag: MGET in one slot works

    caches["default"].delete_many(keys)
    assert client.get(SESSIONS)["X-RateLimit-Remaining"] == "99"


def test_the_cluster_url_is_checked():
    assert redis_cluster.node_url("redis+cluster://127.0.0.1:7000") == "redis://127.0.0.1:7000/0"
    assert redis_cluster.node_url("rediss+cluster://u:p@h:7000/0") == "rediss://u:p@h:7000/0"
    with pytest.raises(ImproperlyConfigured, match="only database 0"):
        redis_cluster.node_url("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(ImproperlyConfigured, match="one node"):
        redis_cluster.node_url("redis+cluster://a:1,b:2")


def replicated(procs: RedisClusterProcs, primary: int) -> bool:
    """The primary's replica has every write the primary has."""
    info = procs.cli(primary, "INFO", "replication")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    offset = fields.get("master_repl_offset")
    return any(offset and f"offset={offset}," in value for key, value in fields.items() if key.startswith("slave"))


def test_a_killed_primary_fails_open_then_the_promoted_replica_keeps_counting(alice):
    procs = start_cluster()
    try:
        with override_settings(CACHES=cluster_caches(procs.url)):
            client = ApiClient(alice.api_token)
            for expected in ("99", "98", "97"):
                assert client.get(SESSIONS)["X-RateLimit-Remaining"] == expected
            key = caches["default"].make_key(throttles.limiter.current_keys(throttles.limits_for_user(alice))[0])
            primary = procs.primary_of(key)
            poll_until(lambda: replicated(procs, primary), timeout=5, what="the replica catching up")

            procs.kill(primary)
            served_unlimited = 0
            while True:
                response = client.get(SESSIONS)
                assert response.status_code == 200  # fail open: served, never a 5xx
                if "X-RateLimit-Remaining" in response:
                    break
                served_unlimited += 1
                assert served_unlimited < 400, "the cluster did not fail over"

            # The count survived on the promoted replica: nothing was lost, the limit goes on.
            assert response["X-RateLimit-Remaining"] == "96"
            # The node that answered knows the new primary; the node asked here may learn it by gossip a moment later.
            poll_until(lambda: promoted(procs, key, primary), timeout=10, what="the cluster naming a new primary")
            assert served_unlimited >= 1  # the failover took a moment, served unlimited meanwhile
    except subprocess.SubprocessError as error:  # pragma: no cover - a broken redis-cli
        pytest.fail(f"redis-cli failed: {error}")
    finally:
        procs.stop()


@pytest.mark.server
@pytest.mark.postgres  # the servers share the test's database
@pytest.mark.django_db(transaction=True)
def test_a_message_sent_through_gunicorn_wakes_a_stream_on_the_live_process_over_the_cluster(on_cluster, tmp_path):
    env = server_env(
        DATABASE_URL=shared_database_url(connection.settings_dict),
        REDIS_URL=on_cluster.url,
        CACHE_KEY_PREFIX="cluster-live",
        LOG_LEVEL="INFO",  # the live process logs its subscription
        # The database re-check (while the channel is down) would deliver within a
        # minute: only a working subscription delivers within seconds.
        LIVE_RECHECK_SECONDS="60",
    )
    with (
        start_gunicorn(["chatsite.wsgi", "-w", "1"], env=env, log=tmp_path / "gunicorn.log") as wsgi,
        start_uvicorn(env=env, log=tmp_path / "uvicorn.log") as live,
    ):
        status, _, body = call(wsgi.port, "POST", GUEST_SESSIONS)
        assert status == 201
        key = json.loads(body)["data"]["session_key"]
        stream = EventStream(live.port, f"/api/v1/chat/guest/{key}/events")
        assert stream.status == 200
        try:
            poll_until(lambda: "wake-up channel subscribed" in live.log.read_text(), timeout=10, what="subscribed")
            status, _, body = call(
                wsgi.port,
                "POST",
                f"/api/v1/chat/guest/{key}/messages",
                {"Content-Type": "application/json"},
                json.dumps({"content": "over the cluster"}).encode(),
            )
            assert status == 201
            [event] = stream.messages(1, timeout=5)
        finally:
            stream.close()
    assert event["content"] == "over the cluster"


def promoted(procs: RedisClusterProcs, key: str, killed: int) -> bool:
    """Whether the cluster names a live primary other than `killed` for `key`'s slot."""
    try:
        return procs.primary_of(key) != killed
    except LookupError:  # no node has named the new primary yet
        return False
