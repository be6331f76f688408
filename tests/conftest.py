"""Personas, markers and the fixtures every test shares (helpers: tests/support.py).

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
from tests.support import ApiClient, browser_missing, make_user, skip_or_fail


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL: set DATABASE_URL=postgres://...")
    if item.get_closest_marker("redis") and not os.environ.get("REDIS_URL"):
        skip_or_fail("needs Redis: set REDIS_URL=redis://...")
    if item.get_closest_marker("browser") and (reason := browser_missing()):
        skip_or_fail(reason)


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("tests.test_fuzz")
    if fuzz is not None and fuzz.STATUSES:
        statuses = fuzz.STATUSES
        server_errors = sum(n for status, n in statuses.items() if status >= 500)
        terminalreporter.write_line(
            f"fuzz: {sum(statuses.values())} inputs, 5xx: {server_errors}, by status: {dict(sorted(statuses.items()))}"
        )
        terminalreporter.write_line(f"fuzz: crafted cursors by status: {dict(sorted(fuzz.CURSORS.items()))}")
        terminalreporter.write_line(f"fuzz: by persona: {dict(sorted(fuzz.PERSONAS.items()))}")


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
