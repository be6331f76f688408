"""Settings for the chat-history service, read from the environment.

Safe by default: DEBUG is off unless asked for, there is no SECRET_KEY outside
debug, and ALLOWED_HOSTS is explicit. Every variable is listed in `.env.example`
and in the README.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

from chat.rates import parse_rate

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name)
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def read_env_file(path: Path) -> None:
    """A development .env (`make install` writes one): KEY=VALUE lines, each a default under the real environment."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ImproperlyConfigured(f"{path}: a line is not KEY=VALUE: {line!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        os.environ.setdefault(key, value)


# The checkout's .env (git- and docker-ignored), so every command of a newcomer's
# terminals has what `make run` has; ENV_FILE names another file, or none when empty.
ENV_FILE = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE:
    read_env_file(Path(ENV_FILE))

DEBUG = env_bool("DEBUG")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set unless DEBUG is on")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105 (DEBUG only)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "chat.api.errors.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "accounts",
    "chat",
    "chat.web",
]

MIDDLEWARE = [
    "chat.middleware.RequestIdMiddleware",
    "chat.observability.RequestLogMiddleware",
    # Before the body limit, redirects, sessions and DRF's authentication and rate
    # limits: a preflight is answered here, and every answer below gets CORS headers.
    "chat.cors.CorsMiddleware",
    "chat.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "chat.middleware.LazyMessageMiddleware",  # Django's, its storage made only when used
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
WSGI_APPLICATION = "chatsite.wsgi.application"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL, else an SQLite file in the project. Connections are kept
# open between requests (reconnecting per request costs most of a poll's time).
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take SQLite's write lock up front, so two writers
    # wait for each other instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    # Fail fast when PostgreSQL is unreachable: the request answers 503.
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 3))

# A PostgreSQL streaming replica for the reads that may lag (chat.replica): the
# primary keeps every write and every read that must not lag. Optional.
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = dj_database_url.parse(
        DATABASE_REPLICA_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 600), conn_health_checks=True
    )
    # A replica that does not answer within a second is skipped (reads go to the primary).
    DATABASES["replica"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_REPLICA_CONNECT_TIMEOUT", 1)
    # Tests read the replica alias from the test database itself.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["chat.replica.PrimaryRouter"]
# Django's PostgreSQL backend with a health check that costs no round trip while a
# kept connection is sound (chat.postgresql: `SELECT 1` only when the server may have dropped it).
for _alias in DATABASES.values():
    if _alias["ENGINE"] == "django.db.backends.postgresql":
        _alias["ENGINE"] = "chat.postgresql"
# A replica further behind than this is skipped; checked at most this often per process.
REPLICA_MAX_LAG_SECONDS = float(env_str("REPLICA_MAX_LAG_SECONDS", "5"))
REPLICA_CHECK_SECONDS = float(env_str("REPLICA_CHECK_SECONDS", "1"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# Cache: Redis when REDIS_URL is set, else Django's in-process cache. Errors are
# never swallowed here (no IGNORE_EXCEPTIONS): the rate limiter decides what an
# unreachable Redis means, explicitly, and logs and counts it.
# REDIS_URL=redis+cluster://HOST:PORT names one node of a Redis Cluster (chat.redis_cluster).
REDIS_URL = env_str("REDIS_URL")
REDIS_SOCKET_TIMEOUT = float(env_str("REDIS_SOCKET_TIMEOUT", "0.25"))
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "chat")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
    if REDIS_URL.split("://", 1)[0] in {"redis+cluster", "rediss+cluster"}:
        CACHES["default"]["OPTIONS"]["CONNECTION_FACTORY"] = "chat.redis_cluster.ClusterConnectionFactory"
    if "{" in CACHES["default"]["KEY_PREFIX"] or "}" in CACHES["default"]["KEY_PREFIX"]:
        # The first {...} of a key is its Redis Cluster hash tag: the limiter sets its own.
        raise ImproperlyConfigured("CACHE_KEY_PREFIX must not contain { or }")
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "chat-default",
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Request bodies: 1 MiB unless configured. BodySizeLimitMiddleware answers 413
# before anything reads the body; Django's own limit is kept in step.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# Paths with a limit of their own: an import of a user's data takes up to 32 MiB.
# Its view reads the stream itself (never request.body, which Django's limit guards).
MAX_REQUEST_BODY_BYTES_BY_PATH = {
    "/api/chat/import": env_int("MAX_IMPORT_BODY_BYTES", 32 * 1024 * 1024),
}
# What one POST /api/chat/import may hold besides its bytes, so that the largest
# import ends well inside gunicorn's 30 s worker timeout and the proxy's 60 s: a
# session line costs ~2 ms and a message ~0.5 ms on one core of the benchmark
# machine, and 32 MiB of small lines would be ~400,000 of them (minutes). A bigger
# history is imported in parts, or by staff with `manage.py import_sessions` (no limits).
IMPORT_MAX_SESSIONS = env_int("IMPORT_MAX_SESSIONS", 500)  # sessions in one import
IMPORT_MAX_MESSAGES = env_int("IMPORT_MAX_MESSAGES", 10_000)  # messages in one import

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerOrTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_THROTTLE_CLASSES": [],
    "EXCEPTION_HANDLER": "chat.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat history API",
    "DESCRIPTION": "Chat sessions and their messages for REST clients, guest live chat, tiered rate limits.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Separate request components, so that request-only rules (minLength 1 for
    # non-blank strings, writeOnly fields) are in the schema that clients and fuzzers read.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chat.api.schema.require_request_bodies",
        "chat.api.schema.merge_blank_alternatives",
        "chat.api.schema.add_operations_endpoints",
        "chat.api.schema.add_live_endpoints",
        "chat.api.schema.tag_api_parts",
    ],
    # A message's role appears as `role` and as the inbox's `last_role`: one enum.
    "ENUM_NAME_OVERRIDES": {"RoleEnum": "chat.models.Role"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No schema validator: Swagger UI would send the schema to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None, "deepLinking": True},
    "REDOC_DIST": "SIDECAR",
}

# Rate limits: "<requests>/<second|minute|hour|day>". Each can be overridden from
# the environment as RATE_LIMIT_<KEY> with the key upper-cased and ":" as "_",
# e.g. RATE_LIMIT_USER_FREE=200/hour.
RATE_LIMITS = {
    # free tier: 100 requests an hour per user, one budget for all authenticated endpoints
    "user:free": "100/hour",
    # pro tier: 500 requests an hour per user
    "user:pro": "500/hour",
    # enterprise tier: 2000 requests an hour per user
    "user:enterprise": "2000/hour",
    # no or invalid credentials on an authenticated endpoint: 20 an hour per client IP
    "anon": "20/hour",
    # guest polling: 60 requests a minute per guest session key
    "guest_poll": "60/minute",
    # guest session creation: 10 new sessions an hour per client IP
    "guest_create": "10/hour",
    # guest send: 30 messages a minute per guest session key
    "guest_send": "30/minute",
    # every guest endpoint together: 600 requests a minute per client IP (flood guard)
    "guest_ip": "600/minute",
    # The plain Django doors (django-ratelimit, chat.api.doors), per client IP:
    # /metrics: 120 a minute (a scrape every 15 s is 4; a token guesser gets few answers)
    "metrics": "120/minute",
    # /api/schema/: 30 a minute (~30 ms of CPU each)
    "schema": "30/minute",
    # admin login: 20 posted passwords an hour
    "admin_login": "20/hour",
}
for _key in RATE_LIMITS:
    _override = env_str("RATE_LIMIT_" + _key.upper().replace(":", "_"))
    if _override:
        try:
            parse_rate(_override)
        except ImproperlyConfigured:
            raise ImproperlyConfigured(
                f"RATE_LIMIT_{_key.upper().replace(':', '_')} must be <requests>/<second|minute|hour|day>, not {_override!r}"
            ) from None
        RATE_LIMITS[_key] = _override
# When the cache is unreachable: serve requests (fail open, logged and counted)
# or answer 503 (fail closed).
RATE_LIMIT_FAIL_OPEN = env_bool("RATE_LIMIT_FAIL_OPEN", True)
RATE_LIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
# How many reverse proxies in front of the app append to X-Forwarded-For. With 0
# (the default) the header is ignored: a client cannot choose its own IP.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

METRICS_TOKEN = env_str("METRICS_TOKEN")

# The demo page (/demo/) that embeds the guest widget: on with DEBUG, or DEMO_PAGE=true.
DEMO_PAGE = env_bool("DEMO_PAGE", False)
# The API origin the demo page's widget talks to (e.g. http://127.0.0.1:8000); empty: the page's own.
DEMO_WIDGET_API = env_str("DEMO_WIDGET_API").rstrip("/")
# Browsers on other origins (chat.cors, API.md "Browsers (CORS)"). Exact origins
# ("https://shop.example", comma-separated; none by default) that may call every endpoint.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", [])
# true: the guest endpoints (not the staff or authenticated ones) answer any origin with "*".
CORS_GUEST_ANY_ORIGIN = env_bool("CORS_GUEST_ANY_ORIGIN", False)
# Never cookies cross-origin: tokens travel in Authorization.
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (*default_headers, "x-request-id", "x-correlation-id", "last-event-id")
# Browsers may reuse a preflight's answer for ten minutes.
CORS_PREFLIGHT_MAX_AGE = 600
CORS_EXPOSE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After", "X-Request-ID")

# Production hardening; every switch can be set from the environment.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SECURE_PROXY_SSL_HEADER") else None
# Off by default: TLS usually ends at the proxy, which redirects; production sets it.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "trace_id": {"()": "chat.logging.TraceIdFilter"},
        "redact_request": {"()": "chat.observability.RedactRequestFilter"},
    },
    "formatters": {"json": {"()": "chat.logging.JsonFormatter"}},
    "handlers": {
        # redact_request: Django's lines about a request (django.request, django.security.*)
        # keep its route and trace id, never its path (a guest's holds its key) or the request.
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["trace_id", "redact_request"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # The JSON request log replaces Django's own request/server lines.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        # Django's default adds mail_admins here, whose mails carry request bodies: console only.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.server": {"handlers": [], "level": "ERROR", "propagate": False},
    },
}

# Real-time delivery (chat.wakeups, chat.live). Pub/sub channels are global across
# Redis databases: the channel carries the key prefix and the database number.
WAKEUP_CHANNEL = env_str("WAKEUP_CHANNEL") or f"{CACHE_KEY_PREFIX}:{urlsplit(REDIS_URL).path.strip('/') or '0'}:wakeups"
# A stream ends after 300 s; the browser's EventSource reconnects with Last-Event-ID.
LIVE_STREAM_MAX_SECONDS = env_int("LIVE_STREAM_MAX_SECONDS", 300)
# An idle stream sends a comment line every 15 s (proxies close silent connections).
LIVE_HEARTBEAT_SECONDS = env_int("LIVE_HEARTBEAT_SECONDS", 15)
# Open streams: at most 3 per guest session key and 30 per client IP.
LIVE_STREAMS_PER_KEY = env_int("LIVE_STREAMS_PER_KEY", 3)
LIVE_STREAMS_PER_IP = env_int("LIVE_STREAMS_PER_IP", 30)
# While the wake-up channel is down, waiters re-check the database this often (seconds).
LIVE_RECHECK_SECONDS = float(env_str("LIVE_RECHECK_SECONDS", "1.0"))
# Threads (each with one persistent database connection) that read for all the waiters of a process.
LIVE_DB_THREADS = env_int("LIVE_DB_THREADS", 4)
