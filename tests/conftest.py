"""Personas and helpers shared by every test.

Tests talk to the real URLs through Django's test client, so routing,
authentication, rate limits and the error envelope are exercised every time.
"""

import os
import sys

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from accounts.models import Tier, User
from accounts.services import token_for

# Under CI, a test that needs PostgreSQL or Redis fails instead of skipping, so
# nothing silently stops being tested. The embedded run of .ci/run (SQLite and
# the in-process cache) sets REQUIRE_SERVICES=0: the run before it covered them.
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", os.environ.get("CI", "")).lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES is set: this must not skip)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL: set DATABASE_URL=postgres://...")
    if item.get_closest_marker("redis") and not os.environ.get("REDIS_URL"):
        skip_or_fail("needs Redis: set REDIS_URL=redis://...")


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("tests.test_fuzz")
    if fuzz is not None and fuzz.STATUSES:
        statuses = fuzz.STATUSES
        server_errors = sum(n for status, n in statuses.items() if status >= 500)
        terminalreporter.write_line(
            f"fuzz: {sum(statuses.values())} inputs, 5xx: {server_errors}, by status: {dict(sorted(statuses.items()))}"
        )


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """Pages render without a collectstatic manifest (tests/test_deploy.py covers it)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Every test starts with empty rate-limit counters."""
    cache.clear()
    yield
    cache.clear()


class ApiClient(Client):
    """Django's test client with JSON bodies and an optional API token."""

    def __init__(self, token: str | None = None, **defaults):
        if token:
            defaults.setdefault("HTTP_AUTHORIZATION", f"Token {token}")
        super().__init__(**defaults)

    def post_json(self, path, data=None, **extra):
        return self.post(path, data, content_type="application/json", **extra)


def make_user(username: str, *, tier: str = Tier.FREE, is_staff: bool = False) -> User:
    user = User.objects.create_user(username=username, password=None, tier=tier, is_staff=is_staff)
    user.api_token = token_for(user=user).key
    return user


@pytest.fixture
def alice(db) -> User:
    """A free-tier user."""
    return make_user("alice")


@pytest.fixture
def bob(db) -> User:
    """A pro-tier user."""
    return make_user("bob", tier=Tier.PRO)


@pytest.fixture
def charlie(db) -> User:
    """A stranger: a free user who owns none of the sessions under test."""
    return make_user("charlie")


@pytest.fixture
def staff(db) -> User:
    """A staff member."""
    return make_user("sam", is_staff=True)


@pytest.fixture
def staff_browser(staff) -> Client:
    """A superuser's browser, logged in to the admin."""
    staff.is_superuser = True
    staff.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def anon(db) -> ApiClient:
    return ApiClient()


@pytest.fixture
def as_alice(alice) -> ApiClient:
    return ApiClient(alice.api_token)


@pytest.fixture
def as_bob(bob) -> ApiClient:
    return ApiClient(bob.api_token)


@pytest.fixture
def as_charlie(charlie) -> ApiClient:
    return ApiClient(charlie.api_token)


@pytest.fixture
def as_staff(staff) -> ApiClient:
    return ApiClient(staff.api_token)
