"""API tokens (accounts.authentication, accounts.selectors.token_user): every request reads the token afresh.

The token and its user are one SQL statement written once (not compiled by the
ORM per request), never cached: a token deleted, rotated or whose user is
deactivated fails on the very next request, and a tier change counts at once.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from accounts import selectors, services
from accounts.models import Tier
from tests.support import ApiClient, assert_envelope

SESSIONS = "/api/chat/sessions"


def test_the_token_finds_its_user_with_every_field_and_the_token_itself(alice):
    user, token = selectors.token_user(key=alice.api_token)

    assert token.key == alice.api_token and token.user is user
    assert (user.pk, user.username, user.tier, user.is_staff, user.is_active) == (
        alice.pk,
        "alice",
        Tier.FREE,
        False,
        True,
    )
    assert selectors.token_user(key="0" * 40) is None


def test_a_field_the_lookup_leaves_out_is_still_read_right(alice):
    alice.email = "alice@example.com"
    alice.save(update_fields=["email"])
    user, token = selectors.token_user(key=alice.api_token)

    assert "email" in user.get_deferred_fields() and "password" in user.get_deferred_fields()
    assert user.email == "alice@example.com"  # Django reads it on demand
    assert user.date_joined == alice.date_joined
    assert token.created is not None


def test_authenticating_is_one_statement(alice):
    client = ApiClient(alice.api_token)
    client.get(SESSIONS)  # the connection's first use belongs to no request
    with CaptureQueriesContext(connection) as captured:
        assert client.get(SESSIONS).status_code == 200
    token_reads = [q["sql"] for q in captured.captured_queries if "authtoken_token" in q["sql"]]
    assert len(token_reads) == 1


def test_a_deleted_token_fails_on_the_next_request(alice):
    client = ApiClient(alice.api_token)
    assert client.get(SESSIONS).status_code == 200

    Token.objects.filter(key=alice.api_token).delete()  # as the admin's "delete" does

    assert_envelope(client.get(SESSIONS), 401, "UNAUTHENTICATED")


def test_a_rotated_token_fails_and_the_new_one_works(alice):
    old = ApiClient(alice.api_token)
    assert old.get(SESSIONS).status_code == 200

    new = services.token_for(user=alice, rotate=True).key

    assert_envelope(old.get(SESSIONS), 401, "UNAUTHENTICATED")
    assert ApiClient(new).get(SESSIONS).status_code == 200


def test_a_deactivated_user_is_refused_at_once(alice):
    client = ApiClient(alice.api_token)
    assert client.get(SESSIONS).status_code == 200

    alice.is_active = False
    alice.save(update_fields=["is_active"])

    body = assert_envelope(client.get(SESSIONS), 401, "UNAUTHENTICATED")
    assert body["message"] == "User inactive or deleted."


def test_a_tier_change_counts_on_the_next_request(alice):
    client = ApiClient(alice.api_token)
    assert client.get(SESSIONS)["X-RateLimit-Limit"] == "100"

    services.user_set_tier(user=alice, tier=Tier.PRO)

    assert client.get(SESSIONS)["X-RateLimit-Limit"] == "500"


@pytest.mark.parametrize("key", ["x" * 41, "abc\x00def", "é" * 10, "a-b"])
def test_a_key_that_cannot_be_a_token_is_refused_without_a_query(alice, key):
    client = ApiClient(HTTP_AUTHORIZATION="Bearer " + key)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(SESSIONS)
    assert_envelope(response, 401, "UNAUTHENTICATED")
    assert not [q for q in captured.captured_queries if "authtoken_token" in q["sql"]]
