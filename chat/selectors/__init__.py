"""Every read of sessions and messages (HackSoft "selectors"), one module per part."""

from chat.selectors.guest import (
    GUEST_MESSAGE_FIELDS,
    guest_message_to_wire,
    guest_messages_after,
)
from chat.selectors.messages import (
    MESSAGE_FIELDS,
    SESSION_FIELDS,
    message_to_wire,
    session_messages,
    user_sessions,
)

__all__ = [
    "GUEST_MESSAGE_FIELDS",
    "MESSAGE_FIELDS",
    "SESSION_FIELDS",
    "guest_message_to_wire",
    "guest_messages_after",
    "message_to_wire",
    "session_messages",
    "user_sessions",
]
