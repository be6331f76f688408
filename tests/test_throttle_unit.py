"""The limiter itself, with a fake clock and an in-process counter: windows, headers, failures."""

import logging
from datetime import datetime

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from redis.connection import AbstractConnection

from chat import throttles
from chat.net import client_ip, ip_identity
from chat.throttles import (
    CacheCounter,
    FailureLog,
    Limit,
    RateLimiter,
    RedisCounter,
    counter_identity,
    limits_for_request,
    parse_rate,
)
from tests.support import FakeClock


def at(text: str) -> float:
    """Epoch seconds of a UTC time like '09:15:00.250' on 2025-08-07."""
    return datetime.fromisoformat(f"2025-08-07T{text}+00:00").timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at("09:15:00"))


@pytest.fixture
def limiter(clock) -> RateLimiter:
    cache = LocMemCache("throttle-unit", {})  # LocMemCaches of one name share their storage
    cache.clear()
    return RateLimiter(counter=CacheCounter(cache), clock=clock)


def limit(rate: str = "3/hour", *, scope: str = "user:free", bucket: str = "user", identity: str = "42") -> Limit:
    return Limit(scope=scope, bucket=bucket, identity=identity, rate=parse_rate(rate))


def test_counts_up_to_the_limit_then_refuses_and_remaining_never_goes_negative(limiter):
    decisions = [limiter.hit([limit("3/hour")]) for _ in range(6)]

    assert [d.allowed for d in decisions] == [True, True, True, False, False, False]
    assert [d.binding.remaining for d in decisions] == [2, 1, 0, 0, 0, 0]
    assert [d.binding.count for d in decisions] == [1, 2, 3, 4, 5, 6]
    assert [d.headers()["X-RateLimit-Remaining"] for d in decisions] == ["2", "1", "0", "0", "0", "0"]


def test_the_window_ends_on_the_hour_and_the_next_one_starts_afresh(limiter, clock):
    clock.now = at("09:59:59.999")
    for _ in range(3):
        limiter.hit([limit()])
    last = limiter.hit([limit()])
    assert not last.allowed
    assert last.headers()["X-RateLimit-Reset"] == "2025-08-07T10:00:00.000Z"

    clock.now = at("10:00:00.000")
    first = limiter.hit([limit()])
    assert first.allowed and first.binding.count == 1
    assert first.headers()["X-RateLimit-Reset"] == "2025-08-07T11:00:00.000Z"


def test_reset_is_the_real_end_of_the_window_not_now_plus_the_period(limiter, clock):
    clock.now = at("09:30:15.250")
    assert limiter.hit([limit("60/minute")]).headers()["X-RateLimit-Reset"] == "2025-08-07T09:31:00.000Z"
    assert limiter.hit([limit("100/hour")]).headers()["X-RateLimit-Reset"] == "2025-08-07T10:00:00.000Z"
    assert limiter.hit([limit("5/day")]).headers()["X-RateLimit-Reset"] == "2025-08-08T00:00:00.000Z"


@pytest.mark.parametrize(
    ("now", "retry_after"),
    [("09:00:00", 3600), ("09:30:00.200", 1800), ("09:59:59", 1), ("09:59:59.999", 1), ("09:59:58.5", 2)],
)
def test_retry_after_is_whole_seconds_to_the_window_end_rounded_up_and_at_least_one(limiter, clock, now, retry_after):
    clock.now = at(now)
    for _ in range(3):
        assert "Retry-After" not in limiter.hit([limit()]).headers()
    refused = limiter.hit([limit()])

    assert refused.retry_after == retry_after
    assert refused.headers()["Retry-After"] == str(retry_after)


def test_the_binding_limit_is_the_one_with_fewest_remaining(limiter):
    decision = limiter.hit(
        [limit("60/minute", scope="guest_poll", bucket="guest_poll"), limit("3/hour", scope="guest_create")]
    )
    assert decision.binding.scope == "guest_create"
    assert decision.headers()["X-RateLimit-Limit"] == "3"
    assert decision.headers()["X-RateLimit-Remaining"] == "2"


def test_ties_go_to_the_shorter_window(limiter):
    decision = limiter.hit([limit("10/hour", scope="slow", bucket="slow"), limit("10/minute", scope="fast")])
    assert decision.binding.scope == "fast"
    assert decision.headers()["X-RateLimit-Reset"] == "2025-08-07T09:16:00.000Z"


def test_a_429_shows_the_refusing_limit_that_ends_last_so_retry_after_is_when_a_retry_can_succeed(limiter):
    limits = [limit("1/minute", scope="guest_ip", bucket="guest_ip"), limit("1/hour", scope="guest_create")]
    limiter.hit(limits)
    refused = limiter.hit(limits)

    assert not refused.allowed
    assert refused.binding.scope == "guest_create"
    assert refused.retry_after == 45 * 60


def test_a_limit_that_is_not_spent_does_not_refuse_when_another_is(limiter):
    limits = [limit("100/minute", scope="guest_ip", bucket="guest_ip"), limit("1/hour", scope="guest_create")]
    limiter.hit(limits)
    refused = limiter.hit(limits)
    assert not refused.allowed and refused.binding.scope == "guest_create"
    assert [usage.exceeded for usage in refused.usages] == [False, True]


def test_every_tier_shares_the_users_counter_so_a_tier_change_moves_only_the_limit(limiter):
    for _ in range(3):
        limiter.hit([limit("3/hour", scope="user:free")])
    assert not limiter.hit([limit("3/hour", scope="user:free")]).allowed

    upgraded = limiter.hit([limit("500/hour", scope="user:pro")])
    assert upgraded.allowed
    assert upgraded.binding.count == 5 and upgraded.binding.remaining == 495


def test_each_identity_has_its_own_counter(limiter):
    for _ in range(3):
        limiter.hit([limit(identity="42")])
    assert limiter.hit([limit(identity="43")]).binding.count == 1


def test_current_keys_name_the_running_window(limiter, clock):
    clock.now = at("09:15:00")
    start = int(at("09:00:00"))
    assert limiter.current_keys([limit("3/hour"), limit("3/hour", scope="user:pro")]) == [
        f"rl:user:{{42}}:3600:{start}"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100/hour", (100, 3600)), ("60/minute", (60, 60)), ("5/second", (5, 1)), (" 2 / day ", (2, 86400))],
)
def test_rates_are_requests_per_period(text, expected):
    rate = parse_rate(text)
    assert (rate.limit, rate.period) == expected


@pytest.mark.parametrize("text", ["100", "100/h", "100/hours", "-1/hour", "ten/hour", "100/fortnight", ""])
def test_a_malformed_rate_is_a_configuration_error(text):
    with pytest.raises(ImproperlyConfigured):
        parse_rate(text)


def test_plain_identities_stay_readable_and_anything_else_is_hashed():
    assert counter_identity(42) == "42"
    assert counter_identity("2001:db8::1") == "2001:db8::1"
    assert counter_identity("7f1c2a9e-4b7d-4a52-9a51-0d3c7e1f2b44") == "7f1c2a9e-4b7d-4a52-9a51-0d3c7e1f2b44"
    hashed = counter_identity("a key with spaces and \u00e9 and \udc80 " + "x" * 300)
    assert hashed.startswith("sha256-") and len(hashed) == 39
    assert counter_identity("a b") != counter_identity("a c")


def test_the_in_process_counter_restarts_a_key_that_expired_between_add_and_incr():
    class ExpiringOnce(LocMemCache):
        expired = False

        def incr(self, key, delta=1, version=None):
            if not self.expired:
                self.expired = True
                self.delete(key, version=version)
            return super().incr(key, delta, version)

    cache = ExpiringOnce("throttle-expiring", {})
    cache.add("k", 5)
    assert CacheCounter(cache).incr_many([("k", 60)]) == [1]


def test_an_unreachable_cache_is_logged_once_per_interval_with_the_count_held_back(caplog):
    monotonic = FakeClock(1000.0)
    log = FailureLog(interval=60, clock=monotonic)
    error = ConnectionError("refused")
    with caplog.at_level(logging.ERROR, logger="chat.throttles"):
        for _ in range(5):
            log.report(error, fail_open=True)
        monotonic.now += 61
        log.report(error, fail_open=True)

    records = [r for r in caplog.records if r.name == "chat.throttles"]
    assert len(records) == 2
    assert "failing open" in records[0].getMessage()
    assert records[0].failures_not_logged == 0
    assert records[1].failures_not_logged == 4


@pytest.mark.redis
def test_redis_counts_every_limit_of_a_request_in_one_round_trip(monkeypatch):
    counter = RedisCounter("default")
    counter.incr_many([("warm-up", 5)])  # the connection's handshake is not the request's
    sends = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sends.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    assert counter.incr_many([("rl:a", 60), ("rl:b", 3600), ("rl:c", 5)]) == [1, 1, 1]
    assert counter.incr_many([("rl:a", 60), ("rl:b", 3600)]) == [2, 2]
    monkeypatch.undo()

    assert len(sends) == 2  # one per call, not one per key or per command
    cache = caches["default"]
    assert cache.get("rl:a") == 2
    ttl = cache.ttl("rl:b")
    assert 3500 < ttl <= 3600


@pytest.fixture
def requests():
    return RequestFactory()


def test_client_ip_ignores_x_forwarded_for_without_trusted_proxies(requests, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    request = requests.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert client_ip(request) == "10.0.0.1"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (1, "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the client wrote 6.6.6.6; the proxy appended the truth
        (2, "6.6.6.6, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
        (2, "203.0.113.7", "203.0.113.7"),  # fewer entries than proxies: the innermost proxy's view
        (1, "not-an-ip", "10.0.0.1"),
        (1, "", "10.0.0.1"),
        (1, "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        (1, "::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client on a dual-stack socket
    ],
)
def test_client_ip_takes_the_entry_the_trusted_proxies_point_at(requests, settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    request = requests.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_the_module_limiter_reads_the_rates_at_request_time(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "guest_poll": "7/second"}
    assert throttles.rate_for("guest_poll") == parse_rate("7/second")
    with pytest.raises(ImproperlyConfigured):
        throttles.rate_for("no-such-scope")


@pytest.mark.parametrize(
    ("address", "identity"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:cb00:7107", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", None),
    ],
)
def test_the_ip_limits_count_ipv6_by_its_64_and_mapped_ipv4_as_ipv4(address, identity):
    assert ip_identity(address) == identity


def test_every_address_of_one_ipv6_64_spends_one_budget(requests, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "guest_create": "2/hour"}
    limiter = RateLimiter(counter=CacheCounter(LocMemCache("ipv6", {})), clock=FakeClock(1_000_000))
    addresses = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
    decisions = [
        limiter.hit(limits_for_request(requests.post("/", REMOTE_ADDR=address), ["guest_create"], {}))
        for address in addresses
    ]
    assert [d.allowed for d in decisions] == [True, True, False]
    other = limiter.hit(limits_for_request(requests.post("/", REMOTE_ADDR="2001:db8:1:3::1"), ["guest_create"], {}))
    assert other.allowed  # the next /64 is another client
