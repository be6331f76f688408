"""The one home of what several test modules share: personas' client, fakes, servers, waits, asserts.

Test modules import from here (never from one another, never from conftest):

- ApiClient, make_user, skip_or_fail: the test client with tokens, the personas' maker,
  and the skip that becomes a failure under CI;
- FakeClock: a clock the test moves by hand (the limiter's and the failure log's);
- free_port, poll_until, call, get: real sockets, a wait that polls instead of sleeping,
  one HTTP request on a connection of its own;
- start_gunicorn, start_uvicorn, start_redis, shared_database_url, server_env, manage: servers and
  commands of a test's own; EventStream: a text/event-stream read event by event; start_tcp_proxy:
  a proxy in front of a server that can hang (a stopped database);
- browser_missing, chromium: headless Chromium (Debian's packages) driven by Selenium;
- assert_envelope, assert_rate_headers, assert_429: the contract's envelope and limit headers.
"""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import redis
from django.db import connection
from django.test import Client
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from accounts.models import Tier, User
from accounts.services import token_for

BASE_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUNICORN = BIN / "gunicorn"

# Under CI, a test that needs PostgreSQL or Redis fails instead of skipping, so
# nothing silently stops being tested. The embedded run of .ci/run (SQLite and
# the in-process cache) sets REQUIRE_SERVICES=0: the run before it covered them.
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", os.environ.get("CI", "")).lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES is set: this must not skip)", pytrace=False)
    pytest.skip(reason)


# Clients and personas.


class ApiClient(Client):
    """Django's test client with JSON bodies and an optional API token."""

    def __init__(self, token: str | None = None, **defaults):
        if token:
            defaults.setdefault("HTTP_AUTHORIZATION", f"Token {token}")
        super().__init__(**defaults)

    def post_json(self, path, data=None, **extra):
        return self.post(path, data, content_type="application/json", **extra)


def make_user(username: str, *, tier: str = Tier.FREE, is_staff: bool = False) -> User:
    user = User.objects.create_user(username=username, password=None, tier=tier, is_staff=is_staff)
    user.api_token = token_for(user=user).key
    return user


# Fakes.


class FakeClock:
    """A clock that stands still until the test moves `now`: epoch seconds, or an ISO time to start at."""

    def __init__(self, now: float | str):
        self.now = datetime.fromisoformat(now).timestamp() if isinstance(now, str) else float(now)

    def __call__(self) -> float:
        return self.now


# A Redis nobody listens on: connections are refused at once.
DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
}


# Sockets, waits and HTTP.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll_until(condition, *, timeout: float, what: str, interval: float = 0.05):
    """Call `condition` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


def client_tls() -> ssl.SSLContext:
    """TLS that trusts any certificate: for servers of the test's own, with a certificate it made."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def call(
    port: int,
    method: str,
    path: str,
    headers: dict | None = None,
    body: bytes | None = None,
    *,
    timeout: float = 30,
    tls: bool = False,
) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request on a connection of its own (https with `tls`)."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=client_tls())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict]:
    status, headers, _ = call(port, "GET", path, headers)
    return status, headers


def outside_a_window_edge(period: int, margin: float = 5.0) -> None:
    """Return once the fixed window of `period` seconds has `margin` seconds left at least,
    so that a burst against a real server is counted in one window."""
    poll_until(lambda: period - time.time() % period >= margin, timeout=margin + 1, what="a fresh rate window")


# Servers of a test's own.


def shared_database_url(settings_dict: dict) -> str:
    """A URL for the test run's own PostgreSQL database (connection.settings_dict), for a server it starts."""
    db = settings_dict
    credentials = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}"


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop a server the test started (and only that one), killing it if it does not go."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def start_gunicorn(args: list[str], *, env: dict, log: Path, ready_path: str = "/healthz", ready_status=200):
    """gunicorn `args` (its app, -c, -w ...) run from the project directory with `env`; yields once it answers.

    Binds a free port unless `args` or env's GUNICORN_BIND name one. Its output goes
    to `log`. Stopped with SIGINT (a quick shutdown: database connections close
    before pytest drops the database).
    """
    port = free_port()
    env = {"GUNICORN_BIND": f"127.0.0.1:{port}", "PORT": str(port), **env}
    port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(GUNICORN), *args], cwd=BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:

        def answers() -> bool:
            assert process.poll() is None, f"gunicorn exited: {log.read_text()}"
            try:
                return call(port, "GET", ready_path, timeout=5)[0] == ready_status
            except OSError:
                return False

        poll_until(answers, timeout=30, what=f"gunicorn answering {ready_path} (log: {log})")
        yield SimpleNamespace(port=port, process=process, log=log, env=env)
    finally:
        stop(process, signal.SIGINT)


def manage(*args: str, env: dict) -> str:
    """A management command run in a process of its own with `env` (e.g. against a server's database); its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@contextlib.contextmanager
def start_uvicorn(
    app: str = "chatsite.asgi:application", *, env: dict, log: Path, ready_path: str = "/healthz", port: int = 0
):
    """uvicorn serving `app` (by default the one-port ASGI app: chat.live plus Django) on `port` (a free one
    by default); yields once it answers. Stopped with SIGTERM, as a deployment stops it (streams end, long-polls answer)."""
    port = port or free_port()
    args = [str(BIN / "python"), "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, cwd=BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:

        def answers() -> bool:
            assert process.poll() is None, f"uvicorn exited: {log.read_text()}"
            try:
                return call(port, "GET", ready_path, timeout=5)[0] == 200
            except OSError:
                return False

        poll_until(answers, timeout=30, what=f"uvicorn answering {ready_path} (log: {log})")
        yield SimpleNamespace(port=port, process=process, log=log, env=env)
    finally:
        stop(process, signal.SIGTERM)


def server_env(**overrides: str) -> dict:
    """The environment of a server a test starts: the test's own, production-like, quiet; `overrides` win.

    Rate limits come from `overrides` only (RATE_LIMIT_* of the test's environment are dropped).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("RATE_LIMIT_")}
    env.update(
        SECRET_KEY="test-only-secret-key-not-for-production",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="false",
        LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


class EventStream:
    """A text/event-stream read event by event (the server's answer, with its status and headers)."""

    def __init__(self, port: int, path: str, headers: dict | None = None, *, timeout: float = 10):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.msg  # case-insensitive (uvicorn sends names in lower case)
        self.comments = 0
        self.ended = False

    def body(self) -> bytes:
        """The whole answer of a stream that did not start (an error envelope)."""
        return self.response.read()

    def next(self, timeout: float = 10) -> dict | None:
        """The next event as {"id", "event", "data"} (comments counted, skipped); None when the stream ends."""
        deadline = time.monotonic() + timeout
        event: dict = {}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event within {timeout} s")
            self.conn.sock.settimeout(left)
            line = self.response.readline()
            if not line:
                self.ended = True
                return None
            line = line.rstrip(b"\r\n").decode()
            if not line:
                if event:
                    return event
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            event[field] = value[1:] if value.startswith(" ") else value

    def messages(self, count: int, timeout: float = 10) -> list[dict]:
        """The data of the next `count` message events, parsed; fails if the stream ends or stalls first."""
        found = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            event = self.next(timeout=max(0.01, deadline - time.monotonic()))
            assert event is not None, f"the stream ended after {len(found)} of {count} messages"
            if event.get("event") == "message":
                data = json.loads(event["data"])
                assert event["id"] == str(data["id"])
                found.append(data)
        return found

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def start_redis():
    """A redis-server of the test's own on a free port, which the test may kill or pause."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("needs the redis-server binary on PATH")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)

    def pings() -> bool:
        try:
            return client.ping()
        except redis.RedisError:
            return False

    try:
        poll_until(pings, timeout=10, what="redis-server answering")
        yield SimpleNamespace(port=port, process=process, url=f"redis://127.0.0.1:{port}/0")
    finally:
        client.close()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused one must run to die
            process.kill()
        process.wait()


class TcpProxy:
    """A loopback TCP proxy to `upstream_port` that can hang: `hang()` and it still accepts connections and
    takes their bytes (the kernel acknowledges them) but forwards nothing either way, as a stopped server
    does; `resume()` and everything held goes on. `held()`: connections waiting with bytes not forwarded."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.waiting: set[int] = set()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def hang(self) -> None:
        self.forwarding.clear()

    def resume(self) -> None:
        self.forwarding.set()

    def held(self) -> int:
        with self.lock:
            return len(self.waiting)

    def close(self) -> None:
        self.resume()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                if self.listener.fileno() == -1:
                    return  # closed
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, id(client)), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, key: int) -> None:
        try:
            while data := source.recv(65536):
                if not self.forwarding.is_set():
                    with self.lock:
                        self.waiting.add(key)
                    self.forwarding.wait()
                    with self.lock:
                        self.waiting.discard(key)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def start_tcp_proxy(upstream_port: int):
    """A TcpProxy in front of `upstream_port` (e.g. PostgreSQL's) for the test's own servers to use."""
    proxy = TcpProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def start_nginx(config: str, *, workdir: Path, ports: list[int]):
    """nginx running `config` (a whole nginx.conf) with its pid, temporary files and log in `workdir`.

    Yields once every port in `ports` accepts connections. Skips (fails under CI)
    without an nginx binary: .ci/run installs Debian's.
    """
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        skip_or_fail("needs nginx (apt-get install -y nginx)")
    # Temporary files (request bodies past the buffer, answers) under workdir, not /var/lib/nginx.
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = config.replace("http {\n", "http {\n" + temp, 1)
    conf = workdir / "nginx.conf"
    conf.write_text(config)
    main = f"daemon off; pid {workdir / 'nginx.pid'};" + (" user root;" if os.geteuid() == 0 else "")
    log = workdir / "nginx.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-p", str(workdir), "-c", str(conf), "-g", main], stdout=out, stderr=subprocess.STDOUT
        )

    def listening() -> bool:
        assert process.poll() is None, f"nginx exited: {log.read_text()}"
        for port in ports:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    try:
        poll_until(listening, timeout=15, what=f"nginx listening (log: {log})")
        yield SimpleNamespace(process=process, log=log, conf=conf)
    finally:
        stop(process, signal.SIGQUIT)  # a graceful stop


# The contract's envelope and rate-limit headers.

ENVELOPE_KEYS = {"success", "message", "data", "error", "meta", "trace_id", "timestamp"}


def assert_envelope(response, status: int, code: str | None = None, *, message: str | None = None) -> dict:
    """The envelope of API.md: its keys, success, trace id and timestamp; an error's code. Returns the body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["success"] is (status < 400)
    assert body["trace_id"] == response["X-Request-ID"]
    datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    if status < 400:
        assert body["error"] is None
    else:
        assert body["data"] is None and body["meta"] is None
    if code is not None:
        assert body["error"]["code"] == code
    if message is not None:
        assert body["message"] == message
    return body


def assert_rate_headers(response, *, limit: int, left: int) -> None:
    assert response["X-RateLimit-Limit"] == str(limit)
    assert response["X-RateLimit-Remaining"] == str(left)
    datetime.strptime(response["X-RateLimit-Reset"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert response["X-RateLimit-Reset"][-5:-1].startswith(".")  # milliseconds


def assert_429(response, *, limit: int | None = None) -> dict:
    """The envelope's 429: Retry-After of at least a second, equal to details.retry_after; with `limit`, the headers."""
    body = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    retry_after = int(response["Retry-After"])
    assert retry_after >= 1
    assert body["error"]["details"] == {"retry_after": retry_after}
    if limit is not None:
        assert_rate_headers(response, limit=limit, left=0)
    return body


# A real browser: Debian's chromium and chromium-driver, never a downloaded one.

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"needs Debian's chromium and chromium-driver ({path} is missing): apt-get install chromium chromium-driver"
    return None


@contextlib.contextmanager
def chromium(*, width: int = 1200, height: int = 800):
    """A headless Chromium with a fresh profile, driven by Selenium; its console is kept for get_log("browser")."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# Several servers and commands of the project at once (the Redis Cluster and replica tests).


@contextlib.contextmanager
def start_app(tmp_path: Path, *, env: dict[str, str], workers: int = 3):
    """The project's gunicorn (gunicorn.conf.py) with server_env(**env) and `workers`; yields its port.

    Ready when /not-a-page answers 404: not a limited endpoint, so waiting spends no budget.
    """
    args = ["chatsite.wsgi", "-w", str(workers), "--timeout", "30"]
    log = tmp_path / f"gunicorn-{free_port()}.log"
    with start_gunicorn(args, env=server_env(**env), log=log, ready_path="/not-a-page", ready_status=404) as server:
        yield server.port


def fire(port: int, count: int, path: str, headers: dict) -> list[tuple[int, dict]]:
    """`count` concurrent GETs, 50 at a time: (status, headers) of each."""
    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(lambda _: get(port, path, headers), range(count)))


def metric(port: int, name: str, token: str, **labels: str) -> float:
    """The sum of the Prometheus samples `name` whose labels include `labels`, read from a server's /metrics."""
    status, _, body = call(port, "GET", "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200, body[:200]
    total = 0.0
    for line in body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        series_name, _, label_text = series.partition("{")
        if series_name == name and all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            total += float(value)
    return total


def run_together(count: int, work, *, join_timeout: float = 120) -> list:
    """Run work(i) in `count` threads released at once; return their results (or exceptions) in order.

    Each thread closes its own database connection when done.
    """
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as exc:  # surfaced by the callers' assertions
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=join_timeout)
    return results
