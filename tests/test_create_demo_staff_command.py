import io

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

from accounts.models import Tier, User


def run(**options) -> list[str]:
    out = io.StringIO()
    call_command("create_demo_staff", stdout=out, **options)
    return out.getvalue().splitlines()


def test_it_makes_a_staff_member_who_logs_in_with_the_printed_password(db, settings):
    settings.DEMO_PAGE = True
    password = run()[-1]
    user = authenticate(username="demo_staff", password=password)
    assert user is not None
    assert user.is_staff and not user.is_superuser
    assert user.tier == Tier.ENTERPRISE


def test_running_it_again_replaces_the_password(db, settings):
    settings.DEMO_PAGE = True
    first = run()[-1]
    second = run(username="demo_staff")[-1]
    assert first != second
    assert authenticate(username="demo_staff", password=first) is None
    assert authenticate(username="demo_staff", password=second) is not None
    assert User.objects.filter(username="demo_staff").count() == 1


def test_it_refuses_outside_debug_and_the_demo(db, settings):
    settings.DEBUG = False
    settings.DEMO_PAGE = False
    with pytest.raises(CommandError, match="only with DEBUG=true or DEMO_PAGE=true"):
        run()
    assert not User.objects.filter(username="demo_staff").exists()
