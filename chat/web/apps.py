from django.apps import AppConfig


class ChatWebConfig(AppConfig):
    """An app of its own so that its templates/ and static/ sit beside its views."""

    name = "chat.web"
    label = "chat_web"
    verbose_name = "Chat pages"
