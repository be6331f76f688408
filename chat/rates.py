"""Rates as "<requests>/<second|minute|hour|day>": the one parser of settings and both limiters.

No Django settings here: chatsite/settings.py imports it to check the environment's overrides.
"""

import functools
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour|day)\s*")


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds


@functools.lru_cache(maxsize=128)
def parse_rate(text: str) -> Rate:
    """'100/hour' -> Rate(100, 3600); anything else is ImproperlyConfigured."""
    match = RATE_RE.fullmatch(text)
    if not match:
        raise ImproperlyConfigured(f"rate limit {text!r} is not '<requests>/<second|minute|hour|day>'")
    return Rate(limit=int(match[1]), period=PERIODS[match[2]])
