"""python manage.py reset_rate_limit (USERNAME | --ip IP | --guest KEY)"""

import io

import pytest
from django.core.management import CommandError, call_command

from chat import throttles
from tests.support import ApiClient, FakeClock

SESSIONS = "/api/chat/sessions"


def reset(*args) -> str:
    out = io.StringIO()
    call_command("reset_rate_limit", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def tight_limits(settings):
    settings.RATE_LIMITS = {
        **settings.RATE_LIMITS,
        "user:free": "2/hour",
        "anon": "2/hour",
        "guest_poll": "2/minute",
    }


@pytest.fixture(autouse=True)
def steady_clock(monkeypatch):
    """Mid-hour and mid-minute, so that no test's requests straddle two windows."""
    monkeypatch.setattr(throttles.limiter, "clock", FakeClock("2025-08-07T09:15:30+00:00"))


@pytest.mark.usefixtures("tight_limits")
def test_resetting_a_user_lifts_the_block_and_says_what_it_deleted(as_alice, as_charlie):
    for _ in range(3):
        as_alice.get(SESSIONS)
    as_charlie.get(SESSIONS)
    assert as_alice.get(SESSIONS).status_code == 429

    out = reset("alice")

    assert "Reset the rate limits of user 'alice'" in out
    assert ": 4" in out  # the four requests counted, 429s included
    response = as_alice.get(SESSIONS)
    assert response.status_code == 200
    assert response["X-RateLimit-Remaining"] == "1"
    # Only alice's counter went.
    assert as_charlie.get(SESSIONS)["X-RateLimit-Remaining"] == "0"


@pytest.mark.usefixtures("tight_limits")
def test_resetting_an_ip_lifts_the_anonymous_block(anon):
    for _ in range(3):
        anon.get(SESSIONS)
    assert anon.get(SESSIONS).status_code == 429

    out = reset("--ip", "127.0.0.1")

    assert "IP 127.0.0.1" in out
    assert anon.get(SESSIONS).status_code == 401


@pytest.mark.usefixtures("tight_limits")
@pytest.mark.urls("tests.test_rate_limits")  # a view limited like guest polling
def test_resetting_a_guest_key_lifts_its_polling_block():
    guest = ApiClient()
    for _ in range(2):
        guest.get("/poll/key-a")
    guest.get("/poll/key-b")
    assert guest.get("/poll/key-a").status_code == 429

    reset("--guest", "key-a")

    assert guest.get("/poll/key-a").status_code == 200
    assert guest.get("/poll/key-b")["X-RateLimit-Remaining"] == "0"


@pytest.mark.usefixtures("tight_limits")
def test_a_dry_run_shows_the_counters_and_deletes_nothing(as_alice):
    for _ in range(3):
        as_alice.get(SESSIONS)

    out = reset("alice", "--dry-run")

    assert out.startswith("Would reset the rate limits of user 'alice'")
    assert ": 3" in out
    assert as_alice.get(SESSIONS).status_code == 429


def test_a_user_with_nothing_counted_is_reported_as_such(alice):
    assert "no requests counted" in reset("alice")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "exactly one"),
        (("alice", "--ip", "127.0.0.1"), "exactly one"),
        (("--ip", "127.0.0.1", "--guest", "k"), "exactly one"),
        (("ghost",), "no user 'ghost'"),
        (("--ip", "999.1.1.1"), "not an IP address"),
        (("--ip", "localhost"), "not an IP address"),
        (("--guest", " "), "empty"),
    ],
)
def test_bad_input_is_an_error(alice, args, message):
    with pytest.raises(CommandError, match=message):
        reset(*args)


def test_an_ip_is_normalized_as_the_limiter_sees_it(anon, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": "1/hour"}
    for _ in range(2):
        anon.get(SESSIONS, REMOTE_ADDR="2001:db8::1")
    assert anon.get(SESSIONS, REMOTE_ADDR="2001:db8::1").status_code == 429

    reset("--ip", "2001:0db8:0000:0000:0000:0000:0000:0001")

    assert anon.get(SESSIONS, REMOTE_ADDR="2001:db8::1").status_code == 401


def test_an_ipv4_client_cannot_take_a_second_budget_as_a_mapped_address(anon, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": "1/hour"}
    assert anon.get(SESSIONS, REMOTE_ADDR="203.0.113.7").status_code == 401
    assert anon.get(SESSIONS, REMOTE_ADDR="::ffff:203.0.113.7").status_code == 429

    reset("--ip", "::ffff:203.0.113.7")

    assert anon.get(SESSIONS, REMOTE_ADDR="203.0.113.7").status_code == 401


def test_resetting_any_address_of_an_ipv6_64_resets_the_64(anon, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": "1/hour"}
    assert anon.get(SESSIONS, REMOTE_ADDR="2001:db8:0:1::1").status_code == 401
    assert anon.get(SESSIONS, REMOTE_ADDR="2001:db8:0:1::2").status_code == 429

    reset("--ip", "2001:db8:0:1::99")

    assert anon.get(SESSIONS, REMOTE_ADDR="2001:db8:0:1::3").status_code == 401
