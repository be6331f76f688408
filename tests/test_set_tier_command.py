"""python manage.py set_tier USERNAME TIER"""

import io

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User


def test_sets_the_tier_and_says_so(alice):
    out = io.StringIO()
    call_command("set_tier", "alice", "pro", stdout=out)

    assert User.objects.get(pk=alice.pk).tier == "pro"
    assert "free -> pro" in out.getvalue()


def test_unknown_user_is_an_error(db):
    with pytest.raises(CommandError, match="no user"):
        call_command("set_tier", "ghost", "pro")


def test_unknown_tier_is_an_error(alice):
    with pytest.raises(CommandError):
        call_command("set_tier", "alice", "platinum")
    assert User.objects.get(pk=alice.pk).tier == "free"


def test_the_database_refuses_an_unknown_tier(alice):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=alice.pk).update(tier="platinum")
