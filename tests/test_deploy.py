"""Deployment, as far as this machine can go without Docker.

Docker cannot run here, so every command the Dockerfile and docker-compose.yml
run is run by these tests instead, and the files are parsed to check that they
still say exactly those commands:

- the production settings pass `check --deploy` with the README's environment;
- `collectstatic --noinput` (the build step), then WhiteNoise serving its output;
- the CMD: gunicorn with gunicorn.conf.py, answering /healthz;
- the HEALTHCHECK snippet against that server;
- `manage.py migrate --noinput` (the compose migrate service) on a fresh database;
- the Prometheus multiprocess mode of two workers, and the gunicorn hooks.
"""

import json
import os
import re
import runpy
import secrets
import shlex
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import psycopg
import pytest
import yaml
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.support import call, free_port, poll_until, start_gunicorn

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
README = BASE_DIR / "README.md"
METRICS_TOKEN = "deploy-test-metrics-token-0123456789abcdef"

# What the Dockerfile and docker-compose.yml run; test_docker_files_run_the_commands_the_tests_run holds them to it.
GUNICORN_CMD = ["gunicorn", "-c", "gunicorn.conf.py", "chatsite.wsgi"]
COLLECTSTATIC_CMD = ["python", "manage.py", "collectstatic", "--noinput"]
MIGRATE_CMD = ["python", "manage.py", "migrate", "--noinput"]
# The compose live service (chat.live); tests/test_live_*.py run the same app under uvicorn.
LIVE_CMD = ["uvicorn", "chatsite.asgi:application", "--host", "0.0.0.0", "--port", "8001", "--no-access-log"]  # noqa: S104 (inside a container)
HEALTHCHECK_SNIPPET = (
    "import os, urllib.request; urllib.request.urlopen("
    "'http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=3)"
)


def local(cmd: list[str]) -> list[str]:
    """A command of the image, with this virtualenv's python and gunicorn."""
    program = {"python": sys.executable, "gunicorn": str(BIN / "gunicorn")}[cmd[0]]
    return [program, *cmd[1:]]


def production_env() -> dict[str, str]:
    """The README's production environment (its `production-env` block), with a fresh random SECRET_KEY."""
    text = README.read_text()
    marker = text.index("<!-- production-env -->")
    block = re.search(r"```sh\n(.*?)```", text[marker:], re.S)
    assert block, "README: a ```sh block follows <!-- production-env -->"
    env = {}
    for line in block[1].splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    assert env.pop("SECRET_KEY").startswith("<"), "README shows a placeholder, never a key"
    return {**env, "SECRET_KEY": secrets.token_urlsafe(50)}


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any setting of the app, plus `overrides`."""
    app_settings = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.M))
    env = {
        k: v for k, v in os.environ.items() if k not in app_settings and not k.startswith(("RATE_LIMIT_", "GUNICORN_"))
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **overrides}


def run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout)


# Production settings.


def test_check_deploy_passes_with_the_readmes_production_environment():
    result = run(
        local(["python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"]), clean_env(**production_env())
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_check_deploy_warns_when_a_production_switch_is_left_off():
    env = clean_env(**{**production_env(), "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false"})
    result = run(local(["python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"]), env)
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W012" in result.stderr


def test_the_app_refuses_to_start_without_a_secret_key_when_debug_is_off():
    env = clean_env(**{k: v for k, v in production_env().items() if k != "SECRET_KEY"})
    result = run(local(["python", "manage.py", "check"]), env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set unless DEBUG is on" in result.stderr


# The image's commands, against a real gunicorn.


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    """The build step: collectstatic with DEBUG off (hashed, compressed files and a manifest)."""
    root = tmp_path_factory.mktemp("static")
    env = clean_env(SECRET_KEY="build-time-only-collectstatic-key", DEBUG="false", STATIC_ROOT=str(root))
    result = run(local(COLLECTSTATIC_CMD), env)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def server(static_root, tmp_path_factory):
    """The CMD (gunicorn -c gunicorn.conf.py) in the production environment: two workers, multiprocess metrics."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    env = clean_env(
        **{
            **production_env(),  # its ALLOWED_HOSTS has 127.0.0.1, as the container's health check needs
            "PORT": str(port),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
            "METRICS_TOKEN": METRICS_TOKEN,
            "STATIC_ROOT": str(static_root),
            "DATABASE_URL": f"sqlite:///{tmp / 'server.sqlite3'}",
            **({"REDIS_URL": os.environ["REDIS_URL"]} if os.environ.get("REDIS_URL") else {}),
        }
    )
    with start_gunicorn(local(GUNICORN_CMD)[1:], env=env, log=tmp / "gunicorn.log") as server:
        server.metrics_dir = tmp / "metrics"
        yield server


@pytest.mark.server
def test_gunicorn_with_the_config_answers_healthz_and_readyz(server):
    status, headers, body = call(server.port, "GET", "/healthz", {"X-Request-ID": "docker-probe-1"})
    assert status == 200
    assert json.loads(body)["data"] == {"status": "ok"}
    assert headers["X-Request-ID"] == "docker-probe-1"
    # Over plain http, yet not redirected to https: probes reach the container directly.
    status, _, body = call(server.port, "GET", "/readyz")
    assert status == 200, body


@pytest.mark.server
def test_the_healthcheck_snippet_passes_against_the_server_and_fails_without_one(server):
    ok = run([sys.executable, "-c", HEALTHCHECK_SNIPPET], {**server.env, "PORT": str(server.port)}, timeout=10)
    assert ok.returncode == 0, ok.stderr
    down = run([sys.executable, "-c", HEALTHCHECK_SNIPPET], {**server.env, "PORT": str(free_port())}, timeout=10)
    assert down.returncode != 0


@pytest.mark.server
def test_collected_admin_static_files_are_served_by_the_app_with_debug_off(server, static_root):
    manifest = json.loads((static_root / "staticfiles.json").read_text())
    hashed = manifest["paths"]["admin/css/base.css"]
    assert hashed != "admin/css/base.css"
    proxy = {"X-Forwarded-Proto": "https"}  # as the TLS-ending proxy says; plain http is redirected
    status, headers, body = call(server.port, "GET", f"/static/{hashed}", proxy)
    assert status == 200
    assert body == (static_root / hashed).read_bytes()
    assert "immutable" in headers["Cache-Control"]
    status, headers, _ = call(server.port, "GET", f"/static/{hashed}", {**proxy, "Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert call(server.port, "GET", f"/static/{hashed}")[0] == 301  # SECURE_SSL_REDIRECT


def scraped_healthz_count(port: int) -> float:
    status, _, body = call(port, "GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200
    return sum(
        s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "chat_http_requests_total" and s.labels == {"method": "GET", "route": "healthz", "status": "200"}
    )


def healthz_burst(port: int, count: int) -> set[int]:
    def healthz(i: int) -> int:
        return call(port, "GET", "/healthz", {"X-Request-ID": f"multi-{i}"})[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return set(pool.map(healthz, range(count)))


@pytest.mark.server
def test_metrics_add_up_across_workers_and_the_log_is_json_request_lines(server):
    before = scraped_healthz_count(server.port)
    assert healthz_burst(server.port, 40) == {200}
    # Each worker writes its own file; any worker's answer is the sum of all.
    assert scraped_healthz_count(server.port) == before + 40
    assert len(list(server.metrics_dir.glob("counter_*.db"))) >= 1
    assert call(server.port, "GET", "/metrics")[0] == 401

    def logged_requests() -> dict:
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        requests = {line["trace_id"]: line for line in lines if line["logger"] == "chat.request"}
        return requests if all(f"multi-{i}" in requests for i in range(40)) else None

    requests = poll_until(logged_requests, timeout=5, what="40 request lines in the log")
    for i in range(40):
        line = requests[f"multi-{i}"]
        assert (line["method"], line["route"], line["status"], line["user"]) == ("GET", "healthz", 200, "anonymous")
    assert '"GET /healthz HTTP/1.1" 200' not in server.log.read_text()  # no access log
    assert "Control socket" not in server.log.read_text()


@pytest.mark.server
def test_two_workers_without_a_metrics_directory_get_one_made_and_removed_on_exit(static_root, tmp_path):
    """Otherwise each scrape shows the counters of whichever worker answered it."""
    env = clean_env(
        **{
            **production_env(),
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2",
            "METRICS_TOKEN": METRICS_TOKEN,
            "STATIC_ROOT": str(static_root),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'server.sqlite3'}",
        }
    )
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
    with start_gunicorn(local(GUNICORN_CMD)[1:], env=env, log=tmp_path / "gunicorn.log") as server:
        made = re.search(r"Prometheus multiprocess directory: (\S+)", server.log.read_text())
        assert made, server.log.read_text()
        metrics_dir = Path(made[1])
        before = scraped_healthz_count(server.port)
        assert healthz_burst(server.port, 40) == {200}
        # Every scrape, whichever worker answers it, counts all 40.
        assert {scraped_healthz_count(server.port) for _ in range(10)} == {before + 40}
        assert list(metrics_dir.glob("counter_*.db"))
    assert not metrics_dir.exists()


def test_gunicorn_refuses_more_than_one_worker_when_metrics_are_loaded_without_a_directory(monkeypatch):
    """With preload_app (prometheus_client loaded before the fork) it is too late to make one."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    config = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    assert "prometheus_client" in sys.modules  # this test process has loaded it, as a preloaded app would
    server = SimpleNamespace(cfg=SimpleNamespace(workers=2), log=SimpleNamespace(info=print))
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        config["on_starting"](server)
    config["on_starting"](SimpleNamespace(cfg=SimpleNamespace(workers=1), log=server.log))  # one worker: fine
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_gunicorn_workers_follow_the_cpus_the_process_may_use_not_the_hosts(monkeypatch):
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))["workers"] == 3


# The compose migrate service.


def test_migrate_builds_a_fresh_sqlite_database(tmp_path):
    database = tmp_path / "fresh.sqlite3"
    result = run(local(MIGRATE_CMD), clean_env(**production_env(), DATABASE_URL=f"sqlite:///{database}"))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"chat_sessions", "chat_messages", "accounts_user", "authtoken_token"} <= tables


@pytest.mark.postgres
def test_migrate_builds_a_fresh_postgresql_database(db):
    settings = connection.settings_dict
    name = f"chat_migrate_{os.getpid()}"
    params = {"host": settings["HOST"] or "127.0.0.1", "port": settings["PORT"] or 5432, "user": settings["USER"]}
    if settings["PASSWORD"]:
        params["password"] = settings["PASSWORD"]
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        credentials = quote(params["user"] or "", safe="") + (
            ":" + quote(params["password"], safe="") if "password" in params else ""
        )
        url = f"postgres://{credentials}@{params['host']}:{params['port']}/{name}"
        result = run(local(MIGRATE_CMD), clean_env(**production_env(), DATABASE_URL=url))
        assert result.returncode == 0, result.stderr
        with psycopg.connect(dbname=name, **params) as fresh:
            tables = {row[0] for row in fresh.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"chat_sessions", "chat_messages"} <= tables
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# gunicorn.conf.py's hooks and settings.


def test_gunicorn_config_reads_the_environment_and_keeps_the_access_log_off(monkeypatch):
    for name, value in {"GUNICORN_WORKERS": "5", "GUNICORN_THREADS": "8", "PORT": "9001"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    config = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    assert (config["workers"], config["threads"], config["bind"]) == (5, 8, "0.0.0.0:9001")
    assert config["accesslog"] is None
    assert config["graceful_timeout"] > 0 and config["timeout"] > 0 and config["keepalive"] > 0
    assert config["max_requests"] > 0 and config["max_requests_jitter"] > 0
    assert config["control_socket_disable"] is True  # no socket in a $HOME the image's user lacks


def test_gunicorn_hooks_reset_the_metrics_directory_and_drop_a_dead_workers_live_gauges(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    config = runpy.run_path(str(BASE_DIR / "gunicorn.conf.py"))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_999.db").write_bytes(b"from a previous run")
    config["on_starting"](None)
    assert list((tmp_path / "metrics").iterdir()) == []

    live = tmp_path / "metrics" / "gauge_livesum_4242.db"
    kept = tmp_path / "metrics" / "counter_4242.db"
    live.write_bytes(b"")
    kept.write_bytes(b"")
    config["child_exit"](None, SimpleNamespace(pid=4242))
    assert not live.exists() and kept.exists()  # counters of a dead worker still count


# The Docker files say what the tests run.


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (BASE_DIR / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_docker_files_run_the_commands_the_tests_run():
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert stages == ["python:3.11-slim AS builder", "python:3.11-slim AS runtime"]
    (cmd,) = [json.loads(rest) for keyword, rest in instructions if keyword == "CMD"]
    assert cmd == GUNICORN_CMD
    (healthcheck,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    probe = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert probe == ["python", "-c", HEALTHCHECK_SNIPPET]
    runs = [shlex.split(rest) for keyword, rest in instructions if keyword == "RUN"]
    collect = [words for words in runs if "collectstatic" in words]
    assert len(collect) == 1
    assignments = [w for w in collect[0] if re.fullmatch(r"[A-Z_]+=\S*", w)]
    assert collect[0][len(assignments) :] == COLLECTSTATIC_CMD
    assert dict(a.split("=", 1) for a in assignments)["DEBUG"] == "false"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    # The last USER comes before the CMD: the server does not run as root.
    order = [keyword for keyword, _ in instructions]
    assert order.index("CMD") > len(order) - 1 - order[::-1].index("USER")

    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["migrate"]["command"] == MIGRATE_CMD
    assert services["migrate"]["restart"] == "no"
    app = services["app"]
    assert "command" not in app  # the image's CMD
    assert app["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert app["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert app["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert app["healthcheck"]["test"] == ["CMD", *probe]
    assert services["postgres"]["healthcheck"] and services["redis"]["healthcheck"]
    # The app runs with every variable of the README's production environment.
    assert set(production_env()) <= set(app["environment"])
    assert app["environment"] == services["migrate"]["environment"]
    live = services["live"]
    assert live["command"] == LIVE_CMD and live["image"] == app["image"]
    assert live["environment"] == {**app["environment"], "PORT": "8001"}
    assert live["depends_on"] == app["depends_on"]
    assert live["healthcheck"]["test"] == ["CMD", *probe]
