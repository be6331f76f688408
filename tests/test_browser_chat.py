"""The live chat in a real browser: the widget on a customer's page (one origin) talking
to the API (another origin), and staff answering from the inbox in a second browser.

Headless Chromium from Debian's packages, driven by Selenium; real server processes.
Screenshots of every step go to test-artifacts/browser/.
"""

import json
import time
from types import SimpleNamespace

import pytest
from django.db import connection
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.support import (
    BASE_DIR,
    call,
    chromium,
    free_port,
    manage,
    outside_a_window_edge,
    poll_until,
    server_env,
    shared_database_url,
    start_gunicorn,
    start_uvicorn,
)

pytestmark = [pytest.mark.browser, pytest.mark.server]

ARTIFACTS = BASE_DIR / "test-artifacts" / "browser"
SEND_LIMIT = 4
XSS = '<img src=x onerror="window.__xss=1"><b>bold?</b>'

# The widget's messages: [who, text, confirmed] (the text node after the screen-reader label).
WIDGET_MESSAGES = """
const root = document.querySelector('[data-chat-widget]').shadowRoot;
return Array.from(root.querySelectorAll('.cw-msg')).map(li => [
  li.classList.contains('cw-user') ? 'guest' : 'staff',
  li.childNodes[1].nodeValue,
  !li.classList.contains('cw-pending') && !li.classList.contains('cw-failed'),
]);
"""
INBOX_MESSAGES = """
return Array.from(document.querySelectorAll('#messages li')).map(li => [
  li.classList.contains('msg-user') ? 'guest' : 'staff', li.childNodes[1].nodeValue]);
"""
STORED_KEY = "return localStorage.getItem(arguments[0])"
STATUS = "return document.querySelector('[data-chat-widget]').shadowRoot.querySelector('.cw-status').textContent"
# Where the keyboard focus is, through the widget's shadow root.
FOCUS = """
const a = document.activeElement;
if (!a || !a.hasAttribute('data-chat-widget')) return a ? a.tagName : null;
const inner = a.shadowRoot.activeElement;
return inner ? 'widget:' + (inner.className || inner.tagName) : 'widget';
"""


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """The demo page on http://localhost:P1 (gunicorn) and the API and inbox on
    http://127.0.0.1:P2 (uvicorn serving everything on one port, as `make run` does),
    CORS allowing the first; one database. Yields their base URLs and the servers' env."""
    tmp = tmp_path_factory.mktemp("browser-stack")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with django_db_blocker.unblock():
        vendor = connection.vendor
        settings_dict = connection.settings_dict
    env = server_env(
        # PostgreSQL: the test run's database (flushed after each test); SQLite: a file of its own.
        DATABASE_URL=shared_database_url(settings_dict)
        if vendor == "postgresql"
        else f"sqlite:///{tmp / 'db.sqlite3'}",
        DEBUG="true",  # as `make run`: static files from the apps, the demo page on
        RATE_LIMIT_GUEST_SEND=f"{SEND_LIMIT}/minute",  # low enough for a test to reach
    )
    if vendor != "postgresql":
        manage("migrate", "--noinput", env=env)
    demo_port = free_port()
    demo = f"http://localhost:{demo_port}"
    with start_uvicorn(env={**env, "CORS_ALLOWED_ORIGINS": demo}, log=tmp / "api.log") as api_server:
        api = f"http://127.0.0.1:{api_server.port}"
        demo_env = {**env, "DEMO_WIDGET_API": api, "GUNICORN_BIND": f"127.0.0.1:{demo_port}", "GUNICORN_WORKERS": "1"}
        with start_gunicorn(["-c", "gunicorn.conf.py", "chatsite.wsgi"], env=demo_env, log=tmp / "demo.log"):
            yield SimpleNamespace(demo=demo, api=api, api_port=api_server.port, env=env)


@pytest.fixture
def guest():
    with chromium(width=900, height=720) as driver:
        yield driver


@pytest.fixture
def staff_window():
    with chromium(width=1200, height=720) as driver:
        yield driver


class Shots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, name: str):
        self.name, self.count = name, 0
        for old in ARTIFACTS.glob(f"{name}-*.png"):
            old.unlink()

    def __call__(self, driver, what: str) -> None:
        self.count += 1
        driver.save_screenshot(str(ARTIFACTS / f"{self.name}-{self.count:02d}-{what}.png"))


def widget(driver):
    host = poll_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, "[data-chat-widget]"), timeout=10, what="the widget loading"
    )[0]
    return host.shadow_root


def no_script_errors(driver) -> None:
    errors = [entry["message"] for entry in driver.get_log("browser") if "Uncaught" in entry["message"]]
    assert not errors, errors


def open_widget(driver):
    root = widget(driver)
    root.find_element(By.CSS_SELECTOR, ".cw-launch").click()
    return root


def send(root, text: str) -> None:
    root.find_element(By.CSS_SELECTOR, "textarea").send_keys(text + Keys.ENTER)


def purge_guest_sessions(env: dict) -> None:
    """Every guest session made old, then purged by the command, as a long-idle one would be."""
    manage(
        "shell",
        "-c",
        "import datetime; from django.utils import timezone; from chat.models import ChatSession; "
        "ChatSession.objects.filter(user__isnull=True).update(updated_at=timezone.now() - datetime.timedelta(days=60))",
        env=env,
    )
    manage("purge_guest_sessions", "--inactive-days", "30", env=env)


def log_in_to_inbox(driver, api: str, password: str) -> None:
    driver.get(f"{api}/inbox/")
    assert "/admin/login/" in driver.current_url  # staff only: the admin's login first
    driver.find_element(By.ID, "id_username").send_keys("demo_staff")
    driver.find_element(By.ID, "id_password").send_keys(password + Keys.ENTER)
    poll_until(lambda: driver.current_url == f"{api}/inbox/", timeout=10, what="landing on the inbox")


@pytest.mark.django_db(transaction=True)
def test_guest_and_staff_chat_both_ways_live_across_origins(stack, guest, staff_window):
    demo, api = stack.demo, stack.api
    shot = Shots("chat")
    password = manage("create_demo_staff", env=stack.env).strip().splitlines()[-1]

    # Staff open the inbox first: the guest's message must arrive without a reload.
    log_in_to_inbox(staff_window, api, password)
    shot(staff_window, "staff-inbox")

    guest.get(f"{demo}/demo/")
    root = open_widget(guest)
    assert guest.execute_script(FOCUS) == "widget:TEXTAREA"  # opening puts the cursor in the box
    shot(guest, "guest-opened")
    send(root, "Hello, is the shop open on Sunday?")
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES) == [["guest", "Hello, is the shop open on Sunday?", True]],
        timeout=10,
        what="the guest's message being stored",
    )
    shot(guest, "guest-sent")
    key = guest.execute_script(STORED_KEY, f"chat-widget:{api}")

    row = poll_until(
        lambda: [b for b in staff_window.find_elements(By.CSS_SELECTOR, "#sessions button") if "Sunday" in b.text],
        timeout=10,
        what="the inbox showing the new conversation without a reload",
    )[0]
    assert "awaiting reply" in row.text
    shot(staff_window, "staff-sees-guest")

    row.click()
    poll_until(
        lambda: staff_window.execute_script(INBOX_MESSAGES) == [["guest", "Hello, is the shop open on Sunday?"]],
        timeout=10,
        what="the conversation opening",
    )
    staff_window.find_element(By.ID, "reply-text").send_keys("Yes, from 10 to 4." + Keys.ENTER)
    sent = time.monotonic()
    poll_until(
        lambda: ["staff", "Yes, from 10 to 4.", True] in guest.execute_script(WIDGET_MESSAGES),
        timeout=2,
        what="the reply reaching the guest within 2 s",
        interval=0.02,
    )
    delivered = time.monotonic() - sent
    shot(guest, "guest-got-reply")
    poll_until(
        lambda: (
            staff_window.execute_script(INBOX_MESSAGES)
            == [["guest", "Hello, is the shop open on Sunday?"], ["staff", "Yes, from 10 to 4."]]
        ),
        timeout=5,
        what="the reply shown once in the inbox",
    )
    poll_until(
        lambda: [
            b
            for b in staff_window.find_elements(By.CSS_SELECTOR, "#sessions button")
            if "Staff: Yes, from 10 to 4." in b.text and "awaiting reply" not in b.text
        ],
        timeout=5,
        what="the inbox row moving to 'answered' from the stream",
    )
    shot(staff_window, "staff-replied")
    status, _, body = call(stack.api_port, "GET", f"/api/v1/chat/guest/{key}/messages")
    assert status == 200
    [stored_reply] = [m for m in json.loads(body)["data"] if m["role"] == "assistant"]
    assert stored_reply["message_id"].startswith("inbox_")  # the inbox's client id: a retry stores it once

    # Markup from a guest is text, on both sides, and nothing runs.
    send(root, XSS)
    poll_until(
        lambda: ["guest", XSS, True] in guest.execute_script(WIDGET_MESSAGES), timeout=10, what="the markup being sent"
    )
    poll_until(
        lambda: ["guest", XSS] in staff_window.execute_script(INBOX_MESSAGES),
        timeout=10,
        what="the markup reaching the inbox",
    )
    shot(guest, "guest-markup-as-text")
    shot(staff_window, "staff-markup-as-text")
    for driver in (guest, staff_window):
        assert driver.execute_script("return window.__xss") is None
    assert not root.find_elements(By.CSS_SELECTOR, ".cw-log img, .cw-log b")
    assert not staff_window.find_elements(By.CSS_SELECTOR, "#messages img, #messages b")

    # A reload continues the conversation: every message once, in order.
    guest.refresh()
    root = open_widget(guest)
    expected = [
        ["guest", "Hello, is the shop open on Sunday?", True],
        ["staff", "Yes, from 10 to 4.", True],
        ["guest", XSS, True],
    ]
    poll_until(lambda: guest.execute_script(WIDGET_MESSAGES) == expected, timeout=10, what="the history after a reload")
    time.sleep(1.5)  # long enough for a stream or a poll to bring a duplicate, if there were one
    assert guest.execute_script(WIDGET_MESSAGES) == expected
    # One read of the history, then the event stream (across origins): no long-polls.
    requests = guest.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [url for url in requests if "/messages" in url] == [
        f"{api}/api/v1/chat/guest/{key}/messages?last_message_id=0"
    ]
    shot(guest, "guest-after-reload")
    no_script_errors(guest)
    no_script_errors(staff_window)
    print(f"reply delivered to the guest in {delivered * 1000:.0f} ms")


@pytest.mark.django_db(transaction=True)
def test_keyboard_only_open_type_send_close(stack, guest):
    shot = Shots("keyboard")
    guest.get(f"{stack.api}/demo/")  # the app's own demo page: same origin
    root = widget(guest)
    keys = ActionChains(guest)

    def tab_to_launcher() -> bool:
        keys.send_keys(Keys.TAB).perform()
        return guest.execute_script(FOCUS) == "widget:cw-launch"

    poll_until(tab_to_launcher, timeout=10, what="Tab reaching the chat button", interval=0)
    launcher = root.find_element(By.CSS_SELECTOR, ".cw-launch")
    # A visible focus ring on the button the keyboard reached.
    assert guest.execute_script("return getComputedStyle(arguments[0]).outlineStyle", launcher) != "none"
    shot(guest, "focus-on-button")

    keys.send_keys(Keys.ENTER).perform()
    assert launcher.get_attribute("aria-expanded") == "true"
    assert guest.execute_script(FOCUS) == "widget:TEXTAREA"
    keys.send_keys("Typed with the keyboard only").perform()
    shot(guest, "typed")
    keys.send_keys(Keys.ENTER).perform()
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES) == [["guest", "Typed with the keyboard only", True]],
        timeout=10,
        what="the message being sent with Enter",
    )
    assert root.find_element(By.CSS_SELECTOR, "textarea").get_attribute("value") == ""
    shot(guest, "sent")

    keys.send_keys(Keys.ESCAPE).perform()
    assert not root.find_element(By.CSS_SELECTOR, ".cw-panel").is_displayed()
    assert launcher.get_attribute("aria-expanded") == "false"
    assert guest.execute_script(FOCUS) == "widget:cw-launch"  # focus back where it was
    shot(guest, "closed")
    no_script_errors(guest)


@pytest.mark.django_db(transaction=True)
def test_a_purged_conversation_is_forgotten_and_the_next_message_starts_a_new_one(stack, guest):
    shot = Shots("purged")
    store = f"chat-widget:{stack.api}"
    guest.get(f"{stack.demo}/demo/")
    root = open_widget(guest)
    send(root, "Before the purge")
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES) == [["guest", "Before the purge", True]],
        timeout=10,
        what="the first message being stored",
    )
    first_key = guest.execute_script(STORED_KEY, store)
    assert first_key

    # Written into a purged session: the widget starts a new one with this message.
    purge_guest_sessions(stack.env)
    send(root, "Anyone there?")
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES) == [["guest", "Anyone there?", True]],
        timeout=10,
        what="the message going to a new conversation",
    )
    second_key = guest.execute_script(STORED_KEY, store)
    assert second_key and second_key != first_key
    shot(guest, "new-conversation")

    # Purged while away: the next visit finds a 404, forgets the key and says so.
    page = guest.current_url
    guest.get("about:blank")
    purge_guest_sessions(stack.env)
    guest.get(page)
    root = open_widget(guest)
    poll_until(
        lambda: guest.execute_script(STATUS) == "This conversation has ended. Send a message to start a new one.",
        timeout=10,
        what="the notice of an ended conversation",
    )
    assert guest.execute_script(WIDGET_MESSAGES) == []
    assert guest.execute_script(STORED_KEY, store) is None
    shot(guest, "ended")
    no_script_errors(guest)


@pytest.mark.django_db(transaction=True)
def test_past_the_send_limit_the_widget_waits_retry_after_with_a_notice(stack, guest):
    shot = Shots("limited")
    guest.get(f"{stack.demo}/demo/")
    root = open_widget(guest)
    outside_a_window_edge(60, margin=15)  # all the sends in one window of the limit
    texts = [f"Message {n}" for n in range(1, SEND_LIMIT + 2)]
    for text in texts:
        send(root, text)
    poll_until(
        lambda: guest.execute_script(STATUS).startswith("Too many requests: trying again in "),
        timeout=10,
        what="the rate-limit notice",
    )
    # The sends within the limit are stored; the one past it waits (not failed, not lost).
    assert guest.execute_script(WIDGET_MESSAGES) == [["guest", text, True] for text in texts[:-1]] + [
        ["guest", texts[-1], False]
    ]
    assert not root.find_elements(By.CSS_SELECTOR, ".cw-failed")
    shot(guest, "notice")
    no_script_errors(guest)


@pytest.mark.django_db(transaction=True)
def test_without_eventsource_the_widget_long_polls_and_still_gets_replies_at_once(stack, guest):
    shot = Shots("long-poll")
    guest.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"})
    guest.get(f"{stack.demo}/demo/")
    root = open_widget(guest)
    send(root, "No streams in this browser")
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES) == [["guest", "No streams in this browser", True]],
        timeout=10,
        what="the message being stored",
    )
    requests = "return performance.getEntriesByType('resource').map(e => e.name)"
    key = guest.execute_script(STORED_KEY, f"chat-widget:{stack.api}")
    token = manage("issue_token", "sam", "--create", "--staff", env=stack.env).strip().splitlines()[-1]
    status, _, _ = call(
        stack.api_port,
        "POST",
        f"/api/v1/chat/guest/{key}/replies",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        json.dumps({"content": "Answered through a long-poll"}).encode(),
    )
    assert status == 201
    poll_until(
        lambda: ["staff", "Answered through a long-poll", True] in guest.execute_script(WIDGET_MESSAGES),
        timeout=2,
        what="the reply reaching the long-polling widget within 2 s",
        interval=0.02,
    )
    # The long-poll that brought it has ended, so the browser lists it; no stream was tried.
    assert any("wait=25" in url for url in guest.execute_script(requests))
    assert not any("/events" in url for url in guest.execute_script(requests))
    shot(guest, "reply")
    no_script_errors(guest)


@pytest.mark.django_db(transaction=True)
def test_back_online_the_widget_sends_at_once_not_at_its_next_retry(stack, guest):
    shot = Shots("online")
    guest.get(f"{stack.demo}/demo/")
    root = open_widget(guest)
    send(root, "Before the tunnel")
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES) == [["guest", "Before the tunnel", True]],
        timeout=10,
        what="the first message stored",
    )
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    guest.execute_cdp_cmd("Network.enable", {})
    guest.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    send(root, "Sent offline")
    # Retries 1, 2 and 4 s apart, then every 5 s: this one has just begun its 5 s wait.
    poll_until(
        lambda: guest.execute_script(STATUS) == "Connection lost: reconnecting in 5 s\u2026",
        timeout=30,
        what="the backoff reaching its cap",
        interval=0.02,
    )
    shot(guest, "offline")
    guest.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
    online = time.monotonic()
    poll_until(
        lambda: guest.execute_script(WIDGET_MESSAGES)[-1] == ["guest", "Sent offline", True],
        timeout=10,
        what="the kept message sent once online",
        interval=0.02,
    )
    sent = time.monotonic() - online
    assert sent < 4, f"sent {sent:.1f} s after going online: at the next retry, not at once"
    poll_until(lambda: not guest.execute_script(STATUS), timeout=10, what="the status cleared")
    shot(guest, "online")
    no_script_errors(guest)
    print(f"kept message sent {sent * 1000:.0f} ms after going online")


@pytest.mark.django_db(transaction=True)
def test_a_lost_connection_shows_a_status_then_resumes_losing_and_repeating_nothing(stack, guest, tmp_path):
    """The API server goes away and comes back (on its own port: the other tests' server stays)."""
    shot = Shots("reconnect")
    port = free_port()
    with start_uvicorn(env=stack.env, log=tmp_path / "first.log", port=port):
        guest.get(f"http://127.0.0.1:{port}/demo/")  # the app's own demo page
        root = open_widget(guest)
        send(root, "Going into a tunnel")
        mine = ["guest", "Going into a tunnel", True]
        poll_until(lambda: guest.execute_script(WIDGET_MESSAGES) == [mine], timeout=10, what="the message stored")
        key = guest.execute_script(STORED_KEY, f"chat-widget:http://127.0.0.1:{port}")
    poll_until(
        lambda: guest.execute_script(STATUS).startswith("Connection lost"), timeout=20, what="the connection status"
    )
    send(root, "Still there?")  # sent while the server is away: kept, retried with its id
    poll_until(
        lambda: guest.execute_script(STATUS).startswith("Connection lost: reconnecting in "),
        timeout=20,
        what="the send's retry status",
    )
    shot(guest, "server-gone")
    manage("create_demo_staff", env=stack.env)
    manage(
        "shell",
        "-c",
        "import uuid; from accounts.models import User; from chat.services import guest_reply_send; "
        f"guest_reply_send(session_key=uuid.UUID('{key}'), staff_user=User.objects.get(username='demo_staff'), "
        "content='Written while you were away')",
        env=stack.env,
    )
    # The send's retry is answered before the stream or a long-poll brings the reply written
    # meanwhile (the race CI lost): the reply, older, must still show above it.
    guest.execute_cdp_cmd("Network.enable", {})
    guest.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/events*", "*wait=*"]})
    with start_uvicorn(env=stack.env, log=tmp_path / "second.log", port=port) as server:
        back = time.monotonic()
        reply = ["staff", "Written while you were away", True]
        retried = ["guest", "Still there?", True]
        poll_until(
            lambda: guest.execute_script(WIDGET_MESSAGES) == [mine, retried],
            # The widget retries at most 5 s apart while the page is seen; room for a busy machine.
            timeout=30,
            what="the kept message sent once the server is back",
        )
        resent = time.monotonic() - back
        guest.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        poll_until(
            lambda: (
                guest.execute_script(WIDGET_MESSAGES) == [mine, reply, retried] and not guest.execute_script(STATUS)
            ),
            timeout=30,
            what="the reconnection bringing the reply, in id order, and each message once",
        )
        print(f"kept message sent {resent:.1f} s after the server was back")
        shot(guest, "back")
        status, _, body = call(server.port, "GET", f"/api/v1/chat/guest/{key}/messages")
        assert status == 200
        assert [m["content"] for m in json.loads(body)["data"]] == [
            "Going into a tunnel",
            "Written while you were away",
            "Still there?",
        ]
    no_script_errors(guest)
