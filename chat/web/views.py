"""The staff inbox page and the demo page; the data comes from the API, in the browser."""

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe


@require_safe
@staff_member_required
@ensure_csrf_cookie
def inbox(request):
    """Guest conversations, awaiting a reply first, live; staff read and reply here."""
    return render(request, "chat_web/inbox.html")


@require_safe
def demo(request):
    """A page that embeds the widget as a customer's site would (DEBUG or DEMO_PAGE only)."""
    if not (settings.DEBUG or settings.DEMO_PAGE):
        raise Http404("No demo page here")
    # The API may live on another origin (DEMO_WIDGET_API), as it does on a customer's site.
    api = settings.DEMO_WIDGET_API or request.build_absolute_uri("/").rstrip("/")
    context = {
        "api": api,
        "widget_src": api + static("chat/chat-widget.js"),
        "inbox_url": api + reverse("chat_web:inbox"),
    }
    return render(request, "chat_web/demo.html", context)
