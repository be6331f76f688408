"""Production settings plus the benchmark's URLs (the `bare` baseline). Never deployed.

`make bench` serves the service with DJANGO_SETTINGS_MODULE=bench.settings: every
setting, middleware, logger and limit is production's, read from the same
environment; only the URL configuration adds /bench/bare.
"""

import os

from chatsite.settings import *  # noqa: F403 (the production settings, unchanged)

ROOT_URLCONF = "bench.urls"

# The proposed changes that are settings (the others: bench/experiments.py).
# Off unless BENCH_EXPERIMENTS names it.
_EXPERIMENTS = os.environ.get("BENCH_EXPERIMENTS", "").split(",")
if "no-db-health-checks" in _EXPERIMENTS:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False  # noqa: F405
if "async-commit" in _EXPERIMENTS:
    _options = DATABASES["default"].setdefault("OPTIONS", {})  # noqa: F405
    _options["options"] = (_options.get("options", "") + " -c synchronous_commit=off").strip()
