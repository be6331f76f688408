"""Every read of sessions and messages (HackSoft "selectors"), one module per part."""

from chat.selectors.guest import (
    GUEST_MESSAGE_FIELDS,
    guest_message_to_wire,
    guest_messages_after,
    guest_sessions_written_since,
)
from chat.selectors.history import (
    History,
    HistoryState,
    cursor_decode,
    cursor_encode,
    session_history,
    session_history_state,
)
from chat.selectors.inbox import (
    INBOX_PAGE_SIZE,
    InboxPage,
    inbox_session,
    inbox_sessions,
)
from chat.selectors.messages import (
    MESSAGE_FIELDS,
    SESSION_FIELDS,
    message_to_wire,
    user_sessions,
)
from chat.selectors.search import message_search
from chat.selectors.transfer import user_export
from chat.selectors.usage import user_usage, user_usage_json

__all__ = [
    "GUEST_MESSAGE_FIELDS",
    "INBOX_PAGE_SIZE",
    "MESSAGE_FIELDS",
    "SESSION_FIELDS",
    "History",
    "HistoryState",
    "InboxPage",
    "cursor_decode",
    "cursor_encode",
    "guest_message_to_wire",
    "guest_messages_after",
    "guest_sessions_written_since",
    "inbox_session",
    "inbox_sessions",
    "message_search",
    "message_to_wire",
    "session_history",
    "session_history_state",
    "user_export",
    "user_sessions",
    "user_usage",
    "user_usage_json",
]
