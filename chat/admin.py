"""Staff pages for inspecting sessions and messages, fast on a million rows.

No full counts (the paginator counts at most COUNT_CAP rows), no giant dropdowns
(raw id widgets), no N+1 (owners are joined in the list query).
"""

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from chat import services
from chat.exceptions import ApiError
from chat.models import ChatMessage, ChatSession, client_id_validator

COUNT_CAP = 10_000
SESSION_PAGE_MESSAGES = 100


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows, so a changelist never scans a whole table."""

    @cached_property
    def count(self) -> int:
        return (
            self.object_list[: COUNT_CAP + 1].count() if hasattr(self.object_list, "query") else len(self.object_list)
        )


class OwnerKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("guest", "Guest sessions"), ("owned", "Owned by a user")]

    def queryset(self, request, queryset):
        if self.value() == "guest":
            return queryset.filter(user__isnull=True)
        if self.value() == "owned":
            return queryset.filter(user__isnull=False)
        return queryset


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "title",
        "owner",
        "message_count",
        "total_tokens",
        "last_model",
        "last_message_timestamp",
        "updated_at",
    )
    list_filter = (OwnerKindFilter, "updated_at")
    search_fields = ("=id", "title", "user__username")
    list_select_related = ("user",)
    ordering = ("-updated_at", "-id")
    raw_id_fields = ("user",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    readonly_fields = (
        "id",
        "session_key",
        "message_count",
        "total_tokens",
        "last_model",
        "last_message_preview",
        "last_message_timestamp",
        "created_at",
        "updated_at",
        "recent_messages",
        "reply_as_staff",
    )
    fields = ("id", "user", "guest_name", "title", *readonly_fields[1:])

    @admin.display(ordering="user__username", description="owner")
    def owner(self, obj: ChatSession) -> str:
        return obj.user.username if obj.user_id else "(guest)"

    @admin.display(description="messages")
    def recent_messages(self, obj: ChatSession) -> str:
        """The newest messages, read-only; the full list is one click away."""
        messages = list(
            ChatMessage.objects.filter(session=obj)
            .order_by("-timestamp", "-id")
            .select_related("author")[:SESSION_PAGE_MESSAGES]
        )[::-1]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style='white-space:pre-wrap'>{}</td></tr>",
            (
                (
                    m.timestamp.isoformat(),
                    m.message_id,
                    m.role + (f" ({m.author.username})" if m.author_id else ""),
                    m.model or "",
                    (m.content[:2000] if not m.error else f"[error {m.error_code or ''}] {m.error_message or ''}"),
                )
                for m in messages
            ),
        )
        link = reverse("admin:chat_chatmessage_changelist") + f"?session__id__exact={obj.pk}"
        return format_html(
            "<p>The newest {} of {} messages. <a href='{}'>All messages of this session</a></p>"
            "<table><thead><tr><th>time</th><th>id</th><th>role</th><th>model</th><th>content</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            len(messages),
            obj.message_count,
            link,
            rows,
        )

    def has_add_permission(self, request) -> bool:
        # Sessions are made by their owners through the API.
        return False

    # Edits and deletes go through the services, under the session's lock, like every write.

    def save_model(self, request, obj: ChatSession, form, change) -> None:
        changes = {field: getattr(obj, field) for field in form.changed_data if field in services.STAFF_EDITABLE_FIELDS}
        if changes:
            services.session_edit_by_staff(session_id=obj.pk, changes=changes)

    def delete_model(self, request, obj: ChatSession) -> None:
        services.sessions_delete_by_staff(session_ids=[obj.pk])

    def delete_queryset(self, request, queryset) -> None:
        services.sessions_delete_by_staff(session_ids=queryset.values_list("pk", flat=True))

    # Replying to a guest: a box on the guest session's page whose button posts the
    # page's form (and its CSRF token) to reply_view, which only reads the reply. The
    # page carries a client id made with it, so a double click or a re-sent POST (the
    # browser's back and reload) stores the reply once.

    @admin.display(description="reply as staff")
    def reply_as_staff(self, obj: ChatSession) -> str:
        if obj is None or not obj.is_guest:
            return "Only guest sessions take staff replies."
        return format_html(
            "<textarea name='reply_content' rows='4' cols='80' maxlength='{}'></textarea><br>"
            "<input type='hidden' name='reply_id' value='{}'>"
            "<button type='submit' formaction='{}' class='button'>Send reply</button>",
            services.GUEST_MESSAGE_MAX_LENGTH,
            f"admin_{uuid.uuid4().hex}",
            reverse("admin:chat_chatsession_reply", args=[quote(obj.pk)]),
        )

    def get_urls(self):
        reply = path(
            "<path:object_id>/reply/",
            self.admin_site.admin_view(self.reply_view),
            name="chat_chatsession_reply",
        )
        return [reply, *super().get_urls()]

    def reply_view(self, request, object_id: str):
        """Send the page's reply to the guest through the service every write uses."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        session = self.get_object(request, unquote(object_id))
        if session is None:
            raise Http404("No such session")
        if not self.has_change_permission(request, session):
            raise PermissionDenied
        form = StaffReplyForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Reply not sent: {' '.join(e for errors in form.errors.values() for e in errors)}")
        else:
            try:
                services.guest_reply_send(
                    session_key=session.session_key,
                    staff_user=request.user,
                    content=form.cleaned_data["reply_content"],
                    message_id=form.cleaned_data["reply_id"] or None,
                    source="admin",
                )
            except ApiError as exc:
                messages.error(request, f"Reply not sent: {exc.message}")
            else:
                messages.success(request, "Reply sent to the guest.")
        return HttpResponseRedirect(reverse("admin:chat_chatsession_change", args=[quote(session.pk)]))


class StaffReplyForm(forms.Form):
    reply_content = forms.CharField(max_length=services.GUEST_MESSAGE_MAX_LENGTH, strip=False)
    # The page's client id for this reply (optional: a form posted without one still sends).
    reply_id = forms.CharField(
        required=False,
        max_length=ChatMessage._meta.get_field("message_id").max_length,
        validators=[client_id_validator],
    )

    def clean_reply_content(self) -> str:
        content = self.cleaned_data["reply_content"]
        if not content.strip():
            raise forms.ValidationError("Write something first.")
        return content


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "session_id", "message_id", "role", "model", "total_tokens", "error", "timestamp")
    list_filter = ("role", "error", "content_type")
    search_fields = ("=message_id", "=session__id", "content")
    raw_id_fields = ("session", "author")
    ordering = ("-id",)
    paginator = CappedCountPaginator
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Messages change only through the services, which keep the statistics.
        return False

    # Deletes (the message's page and the "delete selected" action) go through the
    # service too, so the sessions' statistics move with them.

    def delete_model(self, request, obj: ChatMessage) -> None:
        services.messages_delete_by_staff(message_pks=[obj.pk])

    def delete_queryset(self, request, queryset) -> None:
        services.messages_delete_by_staff(message_pks=queryset.values_list("pk", flat=True))
