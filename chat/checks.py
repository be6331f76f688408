"""System checks of the rate limits, run at start-up (`manage.py check`, runserver, gunicorn's first request).

A missing rate or identity would otherwise surface as a 500 on the first request
that needs it: every tier has a rate, every scope a rate and an identity, and
every rate parses (chat.rates, the one parser of settings and both limiters).
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from accounts.models import Tier
from chat import throttles
from chat.api.doors import DOOR_SCOPES
from chat.rates import parse_rate


@checks.register(checks.Tags.security)
def rate_limits(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    rates = settings.RATE_LIMITS
    for scope, text in rates.items():
        try:
            parse_rate(text)
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(f"RATE_LIMITS[{scope!r}]: {exc}", id="chat.E001"))
    for tier in Tier.values:
        if f"{throttles.USER}:{tier}" not in rates:
            errors.append(
                checks.Error(f"tier {tier!r} has no rate", hint=f"add RATE_LIMITS['user:{tier}']", id="chat.E002")
            )
    identities = {**throttles.SCOPE_IDENTITIES, **DOOR_SCOPES}
    for scope in identities:
        if scope not in rates:
            errors.append(checks.Error(f"scope {scope!r} has no rate", hint="add it to RATE_LIMITS", id="chat.E003"))
    for scope in rates:
        if not scope.startswith(throttles.USER + ":") and scope not in identities:
            errors.append(
                checks.Error(
                    f"scope {scope!r} counts nobody",
                    hint="name its identity in chat.throttles.SCOPE_IDENTITIES (or chat.api.doors.DOOR_SCOPES)",
                    id="chat.E004",
                )
            )
    return errors
