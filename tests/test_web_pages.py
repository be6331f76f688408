"""The inbox and demo pages (staff only; demo behind a setting) and the widget's static file.

What they do in a browser: tests/test_browser_chat.py.
"""

import gzip
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

INBOX = "/inbox/"
DEMO = "/demo/"
WIDGET = "chat/chat-widget.js"
# The widget's size budget, gzipped (README, "The chat widget" gives the figures).
WIDGET_GZIP_BUDGET = 8 * 1024


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_inbox_sends_visitors_to_the_admin_login(db):
    response = Client().get(INBOX)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/inbox/"


def test_the_inbox_sends_a_user_who_is_not_staff_to_the_admin_login(alice):
    response = logged_in(alice).get(INBOX)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_inbox_serves_staff_its_page_with_a_csrf_token_for_replies(staff):
    response = logged_in(staff).get(INBOX)
    assert response.status_code == 200
    page = response.content.decode()
    token = re.search(r'<body data-csrf="([^"]+)"', page).group(1)
    assert len(token) >= 32
    assert "csrftoken" in response.cookies
    assert "/static/chat/inbox.js" in page
    assert 'id="messages" role="log" aria-live="polite"' in page


def test_the_inbox_page_takes_no_writes(staff):
    client = Client(enforce_csrf_checks=False)
    client.force_login(staff)
    assert client.post(INBOX).status_code == 405


def test_no_demo_page_unless_debug_or_demo_page_is_on(db, settings):
    settings.DEBUG = False
    settings.DEMO_PAGE = False
    response = Client().get(DEMO)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_the_demo_page_embeds_the_widget_with_the_api_of_its_own_origin(db, settings):
    settings.DEMO_PAGE = True
    settings.DEMO_WIDGET_API = ""
    page = Client().get(DEMO, HTTP_HOST="localhost").content.decode()
    assert (
        '<script src="http://localhost/static/chat/chat-widget.js" data-api="http://localhost" defer></script>' in page
    )
    assert 'href="http://localhost/inbox/"' in page


def test_the_demo_page_embeds_the_widget_from_the_configured_api(db, settings):
    settings.DEMO_PAGE = True
    settings.DEMO_WIDGET_API = "http://127.0.0.1:9000"
    page = Client().get(DEMO, HTTP_HOST="localhost").content.decode()
    assert 'src="http://127.0.0.1:9000/static/chat/chat-widget.js" data-api="http://127.0.0.1:9000"' in page
    assert 'href="http://127.0.0.1:9000/inbox/"' in page


@pytest.mark.parametrize("name", [WIDGET, "chat/inbox.js"])
def test_the_pages_scripts_never_insert_html(name):
    """Text goes in with textContent / createTextNode only (the browser tests send markup through both)."""
    source = Path(finders.find(name)).read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", source)


def test_the_widget_is_one_small_file():
    path = Path(finders.find(WIDGET))
    assert len(gzip.compress(path.read_bytes(), 9)) <= WIDGET_GZIP_BUDGET
