# syntax=docker/dockerfile:1
# The chat-history API: gunicorn serving chatsite.wsgi as a non-root user.
# Docker does not run on the development machines: tests/test_deploy.py runs every
# command below (collectstatic, the CMD with gunicorn.conf.py, the HEALTHCHECK)
# and checks that this file still says the same.

# Builder: wheels for every pinned runtime dependency.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# Runtime: the wheels installed offline, the code, the collected static files.
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system app && useradd --system --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels -r requirements.txt
# The code stays owned by root: the app user can read it, not change it.
COPY . .
# WhiteNoise serves what this collects (hashed names, compressed copies). The key
# only lets the settings load during the build; it is not in the running image's environment.
RUN SECRET_KEY=build-time-only-collectstatic-key DEBUG=false python manage.py collectstatic --noinput
# Prometheus multiprocess mode: every worker writes its values here, /metrics merges them.
ENV DEBUG=false \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc
RUN mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && chown app:app "$PROMETHEUS_MULTIPROC_DIR"
USER app
EXPOSE 8000
# No curl in a slim image: the standard library fetches /healthz (any non-2xx or no answer fails).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=3)"]
# The API. The waiting side (chat.live) runs the same image with another command:
# uvicorn chatsite.asgi:application --host 0.0.0.0 --port 8001 (docker-compose.yml, service live).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "chatsite.wsgi"]
