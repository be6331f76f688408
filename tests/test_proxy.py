"""The reverse proxy of docker-compose.yml: deploy/nginx.conf in front of a real gunicorn.

Docker cannot run here, nginx can: the same file runs with its upstreams, ports and
certificate paths substituted (a self-signed certificate made for the test).
"""

import json
import re
import shutil
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.support import (
    BASE_DIR,
    call,
    client_tls,
    free_port,
    skip_or_fail,
    start_gunicorn,
    start_nginx,
)

NGINX_CONF = BASE_DIR / "deploy" / "nginx.conf"
SESSIONS = "/api/chat/sessions"


def size_in_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", text).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def directive(name: str) -> str:
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", NGINX_CONF.read_text(), re.M)
    return value.strip()


def test_the_proxys_body_limit_is_the_apps():
    example = re.search(r"^MAX_REQUEST_BODY_BYTES=(\d+)$", (BASE_DIR / ".env.example").read_text(), re.M)
    assert size_in_bytes(directive("client_max_body_size")) == int(example[1])
    for timeout in ("client_header_timeout", "client_body_timeout"):
        assert 0 < size_in_bytes(directive(timeout).rstrip("s")) <= 30


def test_compose_publishes_only_the_proxy_and_trusts_one_hop():
    services = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert services["app"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"
    assert services["live"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """gunicorn (the project's config, one worker of 4 threads) behind nginx with deploy/nginx.conf."""
    if shutil.which("openssl") is None:
        skip_or_fail("needs openssl to make the proxy's test certificate")
    tmp = tmp_path_factory.mktemp("proxy")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"),
            *("-keyout", str(tmp / "privkey.pem"), "-out", str(tmp / "fullchain.pem")),
        ],
        check=True,
        capture_output=True,
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": "test-only-secret-key-not-for-production",
        "DEBUG": "false",
        "ENV_FILE": "",
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp / 'app.sqlite3'}",
        "TRUSTED_PROXY_COUNT": "1",  # as compose sets it
        "SECURE_PROXY_SSL_HEADER": "true",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "LOG_LEVEL": "WARNING",
    }
    with start_gunicorn(["-c", "gunicorn.conf.py", "chatsite.wsgi"], env=env, log=tmp / "gunicorn.log") as app:
        http_port, https_port = free_port(), free_port()
        config = (
            NGINX_CONF.read_text()
            .replace("server app:8000;", f"server 127.0.0.1:{app.port};")
            .replace("server live:8001;", f"server 127.0.0.1:{app.port};")  # no live process here
            .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
            .replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
            .replace("/etc/nginx/tls/", f"{tmp}/")
        )
        assert config.count(str(tmp)) == 2 and f":{https_port} ssl" in config
        with start_nginx(config, workdir=tmp, ports=[http_port, https_port]) as proxy:
            proxy.port, proxy.http_port, proxy.app = https_port, http_port, app
            yield proxy


@pytest.mark.server
def test_a_spoofed_x_forwarded_for_does_not_change_the_ip_the_limiter_counts(stack):
    def anonymous(headers: dict) -> int:
        status, answer, _ = call(stack.port, "GET", SESSIONS, headers, tls=True)
        assert status == 401  # counted per client IP before the 401
        return int(answer["X-RateLimit-Remaining"])

    first = anonymous({})
    spoofed = [
        anonymous({"X-Forwarded-For": address})
        for address in ("203.0.113.1", "198.51.100.2, 203.0.113.3", "2001:db8::1", "garbage")
    ]
    # One budget, spent one request at a time, whatever the client claims.
    assert spoofed == [first - 1, first - 2, first - 3, first - 4]


@pytest.mark.server
def test_half_sent_headers_on_40_sockets_do_not_stop_a_normal_request(stack):
    holders = []
    try:
        for _ in range(40):
            raw = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
            held = client_tls().wrap_socket(raw, server_hostname="localhost")
            held.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finished
            holders.append(held)
        # gunicorn's 4 threads would all wait on these; nginx holds them and answers others at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: call(stack.port, "GET", "/healthz", tls=True, timeout=5), range(4)))
        assert [status for status, _, _ in answers] == [200] * 4
        assert json.loads(answers[0][2])["data"] == {"status": "ok"}
    finally:
        for held in holders:
            held.close()


@pytest.mark.server
def test_an_oversized_body_gets_the_proxys_413_envelope_and_never_reaches_the_app(stack):
    too_large = b"x" * (size_in_bytes(directive("client_max_body_size")) + 1)
    status, headers, body = call(
        stack.port, "POST", "/api/chat/messages", {"Content-Type": "application/json"}, too_large, tls=True
    )
    assert status == 413
    envelope = json.loads(body)
    assert envelope["error"] == {"code": "PAYLOAD_TOO_LARGE", "details": None}
    assert envelope["message"] == "Request body is larger than the limit"  # nginx's words, not the app's
    assert headers["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["timestamp"])
    # A body at the limit is passed on, whole: the app answers it (401: no credentials).
    at_limit = too_large[:-1]
    assert (
        call(stack.port, "POST", "/api/chat/messages", {"Content-Type": "application/json"}, at_limit, tls=True)[0]
        == 401
    )


@pytest.mark.server
def test_plain_http_is_redirected_to_https(stack):
    status, headers, _ = call(stack.http_port, "GET", "/api/chat/sessions?x=1", {"Host": "chat.example"})
    assert status == 301
    assert headers["Location"] == "https://chat.example/api/chat/sessions?x=1"


@pytest.mark.server
def test_a_slow_client_is_dropped_by_the_proxy_after_its_header_timeout(stack):
    """The timeouts are nginx's: a connection that never finishes its headers is closed, not served."""
    seconds = size_in_bytes(directive("client_header_timeout").rstrip("s"))
    raw = socket.create_connection(("127.0.0.1", stack.port), timeout=seconds + 10)
    with client_tls().wrap_socket(raw, server_hostname="localhost") as held:
        held.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        try:
            answer = held.recv(1024)
        except (ConnectionError, ssl.SSLError):
            answer = b""
    # Closed without an answer from the app (nginx may say 408 or nothing).
    assert not answer.startswith(b"HTTP/1.1 200")


def test_the_ci_script_installs_nginx_when_missing():
    script = (BASE_DIR / ".ci" / "run").read_text()
    assert re.search(r"command -v nginx .*apt-get install -y[^\n]* nginx", script, re.S)
