from django.urls import path

from chat.api import health
from chat.api.guest import GuestMessagesApi, GuestReplyApi, GuestSessionCreateApi
from chat.api.inbox import GuestInboxApi
from chat.api.messages import ChatMessageDetailApi, ChatMessagesApi
from chat.api.search import ChatSearchApi
from chat.api.sessions import ChatSessionDetailApi, ChatSessionListApi
from chat.api.transfer import ChatExportApi, ChatImportApi
from chat.api.usage import ChatUsageApi

# Django tries the patterns in order, so the busiest come first: a guest's poll and the
# history. No pattern above another can match the same path (each is a distinct literal
# or ends in a distinct literal), so the order changes nothing but the time to resolve.
urlpatterns = [
    path("api/v1/chat/guest/<str:session_key>/messages", GuestMessagesApi.as_view(), name="guest-messages"),
    path("api/chat/messages", ChatMessagesApi.as_view(), name="chat-messages"),
    path("api/chat/messages/<str:message_id>", ChatMessageDetailApi.as_view(), name="chat-message-detail"),
    path("api/chat/sessions", ChatSessionListApi.as_view(), name="chat-sessions"),
    path("api/chat/sessions/<str:session_id>", ChatSessionDetailApi.as_view(), name="chat-session-detail"),
    path("api/chat/search", ChatSearchApi.as_view(), name="chat-search"),
    path("api/chat/usage", ChatUsageApi.as_view(), name="chat-usage"),
    path("api/chat/export", ChatExportApi.as_view(), name="chat-export"),
    path("api/chat/import", ChatImportApi.as_view(), name="chat-import"),
    path("api/v1/chat/guest/sessions", GuestSessionCreateApi.as_view(), name="guest-sessions"),
    path("api/v1/chat/guest/inbox", GuestInboxApi.as_view(), name="guest-inbox"),
    path("api/v1/chat/guest/<str:session_key>/replies", GuestReplyApi.as_view(), name="guest-replies"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
]
