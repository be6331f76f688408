"""ASGI entry point: the waiting endpoints to chat.live, everything else to Django, on one port.

`make run` serves this with uvicorn. In production the same application runs
as the live process (Dockerfile, docker-compose: the `live` service) behind the
proxy, which sends it the waiting paths (chat.live.app.handles) while gunicorn
serves the rest (README, "Real-time delivery").
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django under ASGI runs each request's sync code in a thread of its own, and a
# persistent connection belongs to its thread: kept open (DB_CONN_MAX_AGE), they
# would pile up, one per request served, until PostgreSQL refuses clients. Here each
# Django request closes its connection; chat.live's few reading threads keep theirs.
os.environ.setdefault("DB_CONN_MAX_AGE", "0")

django_application = get_asgi_application()

# After Django is set up: the live app reads settings and models.
from chat.live.app import application as live_application  # noqa: E402
from chat.live.app import handles  # noqa: E402


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await live_application(scope, receive, send)  # Django's ASGI handler has no lifespan
    elif scope["type"] == "http" and handles(scope):
        await live_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
