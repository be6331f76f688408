"""The app behind the project's gunicorn (gunicorn.conf.py, gthread): connections and gunicorn's own log."""

import http.client
import socket
import threading
import uuid

import pytest

from tests.support import poll_until, start_gunicorn

pytestmark = pytest.mark.server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gthread worker with the project's gunicorn.conf.py, on an empty SQLite file and the
    in-process cache: the requests here touch no database."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp / 'unused.sqlite3'}",
        "SECRET_KEY": "test-only-secret-key-not-for-production",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "2",
    }
    with start_gunicorn(["-c", "gunicorn.conf.py", "chatsite.wsgi"], env=env, log=tmp / "gunicorn.log") as running:
        yield running


def test_a_413_says_connection_close_and_closes(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"POST /api/chat/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {2 * MIB}\r\n\r\n"
    ).encode()
    sock.sendall(head)

    def send_body() -> None:
        try:
            sock.sendall(b"x" * (2 * MIB))
        except OSError:
            pass  # the server closed the connection first, as it said it would

    sender = threading.Thread(target=send_body)
    sender.start()
    response = http.client.HTTPResponse(sock, method="POST")
    response.begin()
    body = response.read()
    assert response.status == 413, body
    assert response.getheader("Connection") == "close"
    assert response.getheader("X-RateLimit-Limit") == "20"  # counted before the answer

    def closed() -> bool:
        try:
            return sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    poll_until(closed, timeout=10, what="the server closing the connection")
    sender.join(timeout=10)
    sock.close()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/chat/messages", {}, 401),  # no credentials: refused before the body is read
        ("/api/chat/messages", {"Authorization": "Bearer not-a-token"}, 401),
        ("/api/v1/chat/guest/not-a-key/messages", {}, 404),  # answered before the body is read
    ],
)
def test_after_an_answer_that_left_a_large_body_unread_the_connection_serves_the_next_request(
    server, path, headers, status
):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        body = b'{"content": "' + b"x" * (MIB - 20) + b'"}'
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        first = conn.getresponse()
        first.read()
        assert first.status == status
        assert first.getheader("Connection") != "close"
        sock = conn.sock

        conn.request("GET", "/healthz")
        second = conn.getresponse()
        second.read()
        assert second.status == 200
        assert conn.sock is sock  # the same connection, not a new one
    finally:
        conn.close()


@pytest.mark.parametrize(
    "request_line",
    [
        "GET /api/v1/chat/guest/{key}/messages",  # no version
        "GET /api/v1/chat/guest/{key}/messages\x01 HTTP/1.1",  # a control character
    ],
)
def test_gunicorns_own_warning_about_a_malformed_request_keeps_the_key_out(server, request_line):
    def warnings() -> list[str]:
        return [line for line in server.log.read_text().splitlines() if "Invalid request from" in line]

    before = len(warnings())
    key = str(uuid.uuid4())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"{request_line.format(key=key)}\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")

    line = poll_until(lambda: warnings()[before:], timeout=10, what="gunicorn logging the malformed request")[0]
    assert "Invalid HTTP request line" in line
    assert key not in line
    assert "/api/v1/chat/guest" not in line
