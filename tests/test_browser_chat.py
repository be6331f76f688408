"""The live chat in a real browser: the widget on a customer's page (one origin) talking
to the API (another origin), and staff answering from the inbox in a second browser.

Headless Chromium from Debian's packages, driven by Selenium; real server processes.
Screenshots of every step go to test-artifacts/browser/.
"""

import os
from types import SimpleNamespace

import pytest
from django.db import connection
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.support import BASE_DIR, chromium, free_port, manage, poll_until, shared_database_url, start_gunicorn

pytestmark = [pytest.mark.browser, pytest.mark.server]

ARTIFACTS = BASE_DIR / "test-artifacts" / "browser"

# The widget's messages: [who, text, confirmed] (the text node after the screen-reader label).
WIDGET_MESSAGES = """
const root = document.querySelector('[data-chat-widget]').shadowRoot;
return Array.from(root.querySelectorAll('.cw-msg')).map(li => [
  li.classList.contains('cw-user') ? 'guest' : 'staff',
  li.childNodes[1].nodeValue,
  !li.classList.contains('cw-pending') && !li.classList.contains('cw-failed'),
]);
"""
# Where the keyboard focus is, through the widget's shadow root.
FOCUS = """
const a = document.activeElement;
if (!a || !a.hasAttribute('data-chat-widget')) return a ? a.tagName : null;
const inner = a.shadowRoot.activeElement;
return inner ? 'widget:' + (inner.className || inner.tagName) : 'widget';
"""


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """The demo page on http://localhost:P1 and the API (and inbox) on http://127.0.0.1:P2,
    CORS allowing the first; both on one database. Yields their base URLs and the servers' env."""
    tmp = tmp_path_factory.mktemp("browser-stack")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with django_db_blocker.unblock():
        vendor = connection.vendor
        settings_dict = connection.settings_dict
    env = {key: value for key, value in os.environ.items() if not key.startswith("RATE_LIMIT_")}
    env.update(
        # PostgreSQL: the test run's database (flushed after each test); SQLite: a file of its own.
        DATABASE_URL=shared_database_url(settings_dict)
        if vendor == "postgresql"
        else f"sqlite:///{tmp / 'db.sqlite3'}",
        DEBUG="true",  # as `make run`: static files from the apps, the demo page on
        SECRET_KEY="test-only-secret-key-not-for-production",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        LOG_LEVEL="WARNING",
        # Where the event stream is missing the widget polls once a second: room for that.
        RATE_LIMIT_GUEST_POLL="600/minute",
    )
    if vendor != "postgresql":
        manage("migrate", "--noinput", env=env)
    demo_port, api_port = free_port(), free_port()
    demo, api = f"http://localhost:{demo_port}", f"http://127.0.0.1:{api_port}"
    api_env = {**env, "CORS_ALLOWED_ORIGINS": demo, "GUNICORN_BIND": f"127.0.0.1:{api_port}", "GUNICORN_WORKERS": "2"}
    demo_env = {**env, "DEMO_WIDGET_API": api, "GUNICORN_BIND": f"127.0.0.1:{demo_port}", "GUNICORN_WORKERS": "1"}
    with start_gunicorn(["-c", "gunicorn.conf.py", "chatsite.wsgi"], env=api_env, log=tmp / "api.log"):
        with start_gunicorn(["-c", "gunicorn.conf.py", "chatsite.wsgi"], env=demo_env, log=tmp / "demo.log"):
            yield SimpleNamespace(demo=demo, api=api, env=env)


@pytest.fixture
def guest():
    with chromium(width=900, height=720) as driver:
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
