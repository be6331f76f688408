"""The start-up checks of the rate limits (chat/checks.py)."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from chat.checks import rate_limits


def test_the_shipped_limits_pass():
    assert rate_limits() == []
    call_command("check")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda rates: rates.pop("user:pro"), "chat.E002"),  # a tier without a rate
        (lambda rates: rates.pop("guest_poll"), "chat.E003"),  # a scope without a rate
        (lambda rates: rates.pop("admin_login"), "chat.E003"),  # a django-ratelimit door without a rate
        (lambda rates: rates.update(guest_typing="5/minute"), "chat.E004"),  # a rate nobody is counted by
        (lambda rates: rates.update(anon="20 per hour"), "chat.E001"),  # a rate that does not parse
    ],
)
def test_a_broken_limit_stops_the_start(settings, change, error):
    rates = dict(settings.RATE_LIMITS)
    change(rates)
    settings.RATE_LIMITS = rates
    assert error in {message.id for message in rate_limits()}
    with pytest.raises(SystemCheckError, match=error):
        call_command("check")
