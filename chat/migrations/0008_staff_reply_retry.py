"""A staff reply's client id is a retry too (chat.services.guest_reply_send).

`chat_session_write` (0007) took a stored message with the write's `p_retry_id` as a
retry only when it was a guest's (role `user`). Now the rule is the ORM path's
(SessionWrite.retries): the stored message must have the write's role and its author
(none for a guest, the staff member for a reply), else it is a conflict. The function
is 0007's with that one test changed.
"""

import importlib

from django.db import migrations

session_write = importlib.import_module("chat.migrations.0007_session_write")

# 0007's text -> this migration's: the retry test, and the comments that describe it.
CHANGES = [
    (
        "p_retry_id text,        -- a guest send with a client id: a retry if the guest stored it already",
        "p_retry_id text,        -- a client id: a retry if its author stored it already",
    ),
    (
        "-- 2. A guest's retry: its own earlier send is the answer, and nothing is written;\n"
        "         --    an id of another role's message (a staff reply) is a conflict.",
        "-- 2. A retry (a guest send's or a staff reply's client id): the author's own earlier\n"
        "         --    send is the answer, and nothing is written; another author's message is a conflict.",
    ),
    (
        "retried_content text,   -- a retry: the guest's message as first stored",
        "retried_content text,   -- a retry: the message as first stored",
    ),
    (
        "IF v_retried.role = 'user' THEN",
        "IF v_retried.role = (p_messages -> 0 ->> 'role') AND v_retried.author_id IS NOT DISTINCT FROM p_author_id THEN",
    ),
]


def function(*, forward: bool) -> str:
    """chat_session_write as this migration leaves it (forward) or as 0007 made it."""
    [statement] = [s for s in session_write.POSTGRESQL if "FUNCTION chat_session_write(" in s]
    if forward:
        for old, new in CHANGES:
            assert statement.count(old) == 1, f"0007's function changed: {old!r} is not found once"
            statement = statement.replace(old, new)
    return statement


class Migration(migrations.Migration):
    dependencies = [("chat", "0007_session_write")]

    operations = [
        migrations.RunPython(
            session_write.run({"postgresql": [function(forward=True)]}),
            session_write.run({"postgresql": [function(forward=False)]}),
        ),
    ]
