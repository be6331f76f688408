"""Production settings plus the benchmark's URLs (the `bare` baseline). Never deployed.

`make bench` serves the service with DJANGO_SETTINGS_MODULE=bench.settings: every
setting, middleware, logger and limit is production's, read from the same
environment; only the URL configuration adds /bench/bare.
"""

from chatsite.settings import *  # noqa: F403 (the production settings, unchanged)

ROOT_URLCONF = "bench.urls"
