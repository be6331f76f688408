"""chat_session_write from its own file (chat/sql/session_write.sql), in its current text.

0007 created the function and 0008 changed its retry test; its text now lives in
chat/sql/session_write.sql, the one place to read and change it, and this migration
(like any later one that changes the file) runs the file again: every statement
there is CREATE OR REPLACE. What changed since 0008: the look-up of the replaced messages probes the
(session, message_id) index once per message of the request, where the planner had
chosen to read the whole session.
"""

from pathlib import Path

from django.db import migrations

SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "session_write.sql"


def load(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SQL_FILE.read_text(), params=None)


class Migration(migrations.Migration):
    dependencies = [("chat", "0008_staff_reply_retry")]

    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
