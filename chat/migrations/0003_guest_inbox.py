"""The staff inbox: the newest message's id and role on the session row, and the
partial indexes that read guest sessions by latest activity. Existing sessions are
backfilled from their newest message by (timestamp, id), the rule of the write service."""

from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def backfill_last_message(apps, schema_editor):
    ChatSession = apps.get_model("chat", "ChatSession")
    ChatMessage = apps.get_model("chat", "ChatMessage")
    newest = ChatMessage.objects.filter(session=OuterRef("pk")).order_by("-timestamp", "-id")
    # One UPDATE with correlated subqueries (PostgreSQL and SQLite alike), through the history index.
    ChatSession.objects.using(schema_editor.connection.alias).filter(message_count__gt=0).update(
        last_message_id=Subquery(newest.values("id")[:1]),
        last_role=Subquery(newest.values("role")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_message_extra"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="chatsession",
            name="last_message_id",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="chatsession",
            name="last_role",
            field=models.CharField(
                blank=True,
                choices=[("user", "User"), ("assistant", "Assistant"), ("system", "System")],
                max_length=16,
                null=True,
            ),
        ),
        migrations.RunPython(backfill_last_message, migrations.RunPython.noop, elidable=True),
        migrations.RemoveIndex(
            model_name="chatsession",
            name="chat_session_guest_recent",
        ),
        migrations.AddIndex(
            model_name="chatsession",
            index=models.Index(
                condition=models.Q(("user__isnull", True)),
                fields=["updated_at", "id"],
                name="chat_session_guest_inbox",
            ),
        ),
        migrations.AddIndex(
            model_name="chatsession",
            index=models.Index(
                condition=models.Q(("last_role", "user"), ("user__isnull", True)),
                fields=["updated_at", "id"],
                name="chat_session_guest_awaiting",
            ),
        ),
    ]
