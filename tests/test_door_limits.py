"""django-ratelimit on the plain Django doors: /metrics, /api/schema/ and the admin login."""

import pytest
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from chat import throttles
from tests.support import DEAD_REDIS, ApiClient, assert_429, assert_envelope

METRICS_TOKEN = "door-limit-metrics-token-0123456789"
SCHEMA = "/api/schema/"
LOGIN = "/admin/login/"


@pytest.fixture
def limits(settings):
    def set_limits(**rates):
        settings.RATE_LIMITS = {**settings.RATE_LIMITS, **rates}

    return set_limits


def rate_limited_count(scope: str) -> float:
    return REGISTRY.get_sample_value("chat_rate_limited_total", {"scope": scope}) or 0.0


def test_metrics_answers_401_and_403_only_within_its_limit_per_ip(anon, as_alice, limits, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    limits(metrics="3/hour")
    before = rate_limited_count("metrics")
    assert anon.get("/metrics").status_code == 401
    assert as_alice.get("/metrics").status_code == 403  # the same IP: one budget for every caller
    assert anon.get("/metrics", HTTP_AUTHORIZATION="Bearer a-guess").status_code == 401

    # A guesser learns nothing more: the real token too is refused until the window ends.
    refused = anon.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    body = assert_429(refused)
    assert int(refused["Retry-After"]) <= 3600
    assert body["message"] == "Rate limit exceeded"
    assert rate_limited_count("metrics") == before + 1
    # Another address has its own budget.
    assert (
        anon.get("/metrics", REMOTE_ADDR="198.51.100.4", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code
        == 200
    )


def test_the_schema_is_limited_per_ip(anon, limits):
    limits(schema="2/hour")
    assert [anon.get(SCHEMA).status_code for _ in range(2)] == [200, 200]
    assert_429(anon.get(SCHEMA))
    assert anon.get(SCHEMA, REMOTE_ADDR="198.51.100.5").status_code == 200


def test_admin_login_guesses_are_limited_but_the_page_is_not(staff, limits):
    staff.set_password("the-right-pass-phrase-1")
    staff.save()
    limits(admin_login="3/hour")
    browser = Client()
    assert [browser.get(LOGIN).status_code for _ in range(5)] == [200] * 5  # viewing the form costs nothing
    guesses = [browser.post(LOGIN, {"username": staff.username, "password": f"guess-{i}"}) for i in range(3)]
    assert [r.status_code for r in guesses] == [200, 200, 200]  # the form again, with an error
    # Past the limit even the right password is refused, with the envelope's 429.
    assert_429(browser.post(LOGIN, {"username": staff.username, "password": "the-right-pass-phrase-1"}))
    other = Client(REMOTE_ADDR="198.51.100.6")
    assert other.post(LOGIN, {"username": staff.username, "password": "the-right-pass-phrase-1"}).status_code == 302


@pytest.fixture
def limiter_failures(monkeypatch):
    monkeypatch.setattr(throttles, "failures", throttles.FailureLog())
    sent = []

    def receiver(sender, error, fail_open, **kwargs):
        sent.append(fail_open)

    throttles.limiter_failed.connect(receiver)
    yield sent
    throttles.limiter_failed.disconnect(receiver)


def test_an_unreachable_cache_fails_open_logged_and_signalled(anon, limiter_failures):
    with override_settings(CACHES=DEAD_REDIS):
        assert anon.get("/metrics").status_code == 401  # served, not a 500
        assert anon.get(SCHEMA).status_code == 200
    assert limiter_failures == [True, True]


def test_an_unreachable_cache_fails_closed_with_a_503_when_configured(anon, limiter_failures, settings):
    settings.RATE_LIMIT_FAIL_OPEN = False
    with override_settings(CACHES=DEAD_REDIS):
        response = ApiClient().get("/metrics")
    assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert response["Retry-After"] == "5"
    assert limiter_failures == [False]


def test_no_limit_when_limiting_is_off(anon, limits, settings):
    settings.RATE_LIMIT_ENABLED = False
    limits(schema="1/hour")
    assert [anon.get(SCHEMA).status_code for _ in range(3)] == [200, 200, 200]
