"""python manage.py issue_token USERNAME [--create] [--tier] [--staff] [--rotate]"""

import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from tests.support import ApiClient


def issue_token(*args) -> list[str]:
    out = io.StringIO()
    call_command("issue_token", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_makes_a_user_without_password_and_prints_a_working_token(db):
    lines = issue_token("newbie", "--create")

    token = lines[-1]
    user = User.objects.get(username="newbie")
    assert not user.has_usable_password()
    assert user.tier == "free"
    response = ApiClient(token).post_json("/api/chat/messages", {"sessionId": "s1", "message": {"role": "user"}})
    assert response.status_code == 201


def test_running_twice_prints_the_same_token(db):
    assert issue_token("newbie", "--create")[-1] == issue_token("newbie")[-1]


def test_rotate_replaces_the_token(db):
    old = issue_token("newbie", "--create")[-1]
    new = issue_token("newbie", "--rotate")[-1]

    assert new != old
    assert ApiClient(old).get("/api/chat/sessions").status_code == 401
    assert ApiClient(new).get("/api/chat/sessions").status_code == 200


def test_tier_and_staff_are_set(db):
    issue_token("boss", "--create", "--tier", "enterprise", "--staff")
    user = User.objects.get(username="boss")
    assert user.tier == "enterprise" and user.is_staff


def test_unknown_user_without_create_is_an_error(db):
    with pytest.raises(CommandError, match="--create"):
        issue_token("ghost")
    assert not User.objects.exists()


def test_invalid_username_is_an_error(db):
    with pytest.raises(CommandError, match="cannot create"):
        issue_token("bad name!", "--create")


def test_unknown_tier_is_an_error(db):
    with pytest.raises(CommandError):
        issue_token("newbie", "--create", "--tier", "platinum")


def test_staff_is_given_through_the_accounts_service(db, monkeypatch):
    from accounts import services as account_services
    from accounts.management.commands import issue_token

    calls = []
    monkeypatch.setattr(
        issue_token, "user_set_staff", lambda **kw: calls.append(kw) or account_services.user_set_staff(**kw)
    )
    call_command("issue_token", "sam", "--create", "--staff", stdout=io.StringIO())
    assert [call["user"].username for call in calls] == ["sam"]
    assert User.objects.get(username="sam").is_staff
