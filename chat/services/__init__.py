"""Every write to sessions and messages (HackSoft "services"), one module per part.

The API, the admin and the management commands all write through here; callers
use the package (`services.messages_save`), the modules keep the parts apart.
"""

from chat.services.edits import (
    message_delete,
    messages_delete_by_staff,
    session_messages_delete,
    session_rename,
)
from chat.services.guest import (
    GUEST_MESSAGE_MAX_LENGTH,
    guest_message_send,
    guest_reply_send,
    guest_session_create,
)
from chat.services.maintenance import (
    STAFF_EDITABLE_FIELDS,
    guest_sessions_purge_batch,
    session_edit_by_staff,
    session_stats_recount,
    sessions_delete_by_staff,
)
from chat.services.messages import (
    PREVIEW_LENGTH,
    TITLE_LENGTH,
    messages_save,
    new_message_id,
    session_delete,
    session_lock,
    session_messages_write,
    shorten,
    title_for,
)
from chat.services.transfer import sessions_erase, sessions_import
from chat.services.usage import usage_deferred, usage_record, usage_retire, usage_retire_sessions

__all__ = [
    "GUEST_MESSAGE_MAX_LENGTH",
    "PREVIEW_LENGTH",
    "STAFF_EDITABLE_FIELDS",
    "TITLE_LENGTH",
    "guest_message_send",
    "guest_reply_send",
    "guest_session_create",
    "guest_sessions_purge_batch",
    "message_delete",
    "messages_delete_by_staff",
    "messages_save",
    "new_message_id",
    "session_delete",
    "session_edit_by_staff",
    "session_lock",
    "session_messages_delete",
    "session_messages_write",
    "session_rename",
    "session_stats_recount",
    "sessions_delete_by_staff",
    "sessions_erase",
    "sessions_import",
    "shorten",
    "title_for",
    "usage_deferred",
    "usage_record",
    "usage_retire",
    "usage_retire_sessions",
]
